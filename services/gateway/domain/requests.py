"""What a request to the gateway must satisfy beyond its body's shape. Pure.

A channel names its order by ``<channel>:<external_id>`` — the key of `orders.submitted.v1` and the
source of the order id. The `Idempotency-Key` header, when sent, must be exactly that: a retry with
the same key is the same order (intake recognises it), and a header that disagrees with the body is
a client bug worth refusing rather than guessing which of the two was meant.
"""

from __future__ import annotations

from dataclasses import dataclass

from libs.api_keys import ApiKey


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: an HTTP status and words for the caller."""

    status: int
    error: str


def idempotency_refusal(header: str | None, channel: str, external_id: str) -> Refusal | None:
    """None when the header is absent or names this order; otherwise a 422 saying what it must be."""
    if header is None or header == f"{channel}:{external_id}":
        return None
    return Refusal(422, "Idempotency-Key must be `<channel>:<external_id>` of the order in the body")


def scope_refusal(key: ApiKey, channel: str) -> Refusal | None:
    """A key acts only for the channels it names (`*`, a reading key of support tools, names none)."""
    if key.may_submit(channel):
        return None
    return Refusal(403, f"this key may not act for channel {channel!r}")


def sole_channel(key: ApiKey) -> str | None:
    """The one channel a key acts for, when it names exactly one (then a request need not say it)."""
    named = [c for c in key.channels if c != "*"]
    return named[0] if len(named) == 1 else None
