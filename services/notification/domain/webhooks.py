"""Webhook rules: what a subscription wants, how a delivery is signed, when to retry. Pure."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import random
import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime

import orjson

DELIVERY_NAMESPACE = uuid.UUID("0b5d8a51-7c55-4bd4-8f6e-5a3a8c1c2f10")

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
"""A signing key shorter than this is guessable offline from one signed delivery."""
MAX_SECRET_BYTES = 64


def wants(subscribed: Collection[str], event_key: str) -> bool:
    """`*` takes everything; otherwise the exact key, e.g. `order.shipped` or `stage.entered:packed`."""
    return "*" in subscribed or event_key in subscribed


SHIPMENT_LATE = "shipment.late"
"""What a subscriber names to hear of a shipment that missed a stage deadline (SLA)."""


def status_key(status: str) -> str:
    """What a subscriber names to get an order status: `order.<status>`."""
    return f"order.{status}"


def stage_keys(entered: str | None, left: str | None) -> list[tuple[str, str]]:
    """The keys of one stage change, each with the suffix that makes its delivery id unique:
    `stage.entered:<stage>` and `stage.left:<stage>` (a move is both)."""
    keys = []
    if entered:
        keys.append((f"stage.entered:{entered}", "in"))
    if left:
        keys.append((f"stage.left:{left}", "out"))
    return keys


def delivery_id(subscription_id: str, source_event_id: str) -> str:
    """Stable per (subscription, event): a redelivered event never makes a second delivery."""
    return "msg_" + uuid.uuid5(DELIVERY_NAMESPACE, f"{subscription_id}/{source_event_id}").hex


def payload(event_key: str, occurred_at: datetime, data: bytes) -> bytes:
    """The body subscribers get: `{"type", "timestamp", "data"}`, ``data`` being the event's own JSON."""
    head = orjson.dumps({"type": event_key, "timestamp": occurred_at.isoformat()})
    return head[:-1] + b',"data":' + data + b"}"


def subscription_problem(url: str | None, events: Iterable[str]) -> str | None:
    """Why a subscription cannot be added, or None: it needs a url and events (where the url may
    point is the egress guard's to say)."""
    if not url or not list(events):
        return "adding a subscription needs url, secret and events"
    return None


def secret_problem(secret: str) -> str | None:
    """Why a new signing secret is refused, or None: it must be `whsec_<base64>` (Standard Webhooks)
    of 24 to 64 bytes. Never says anything of the secret itself."""
    if not secret.startswith(SECRET_PREFIX):
        return f"a signing secret must be {SECRET_PREFIX}<base64>"
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return f"the part after {SECRET_PREFIX} is not base64"
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        return f"a signing secret must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {len(key)}"
    return None


def can_sign(secret: str) -> bool:
    """Whether a stored secret gives a signing key: a `whsec_` one must decode (a secret stored
    before secrets were checked may not)."""
    if not secret.startswith(SECRET_PREFIX):
        return True
    try:
        base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def secret_key(secret: str) -> bytes:
    """Standard Webhooks secrets look like `whsec_<base64>`; any other string (only secrets stored
    before secrets were checked) is used as it is."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` — the Standard Webhooks signature."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signatures(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one `v1,` signature per secret, space-separated (Standard
    Webhooks), the current secret first — during a rotation's grace window the receiver accepts
    the delivery with either the old or the new secret."""
    return " ".join(sign(secret, webhook_id, timestamp, body) for secret in secrets)


def verify(secret: str, webhook_id: str, timestamp: int, body: bytes, header: str) -> bool:
    expected = sign(secret, webhook_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in header.split())


def retry_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Exponential back-off with full jitter: attempt 1 waits up to base, then 2x, 4x… never above cap."""
    ceiling = min(cap_s, base_s * (2 ** (attempt - 1)))
    return (rng or random).uniform(ceiling / 2, ceiling)


def is_success(status: int) -> bool:
    """Any 2xx is delivered; everything else (redirects included) is retried."""
    return 200 <= status < 300


def status_problem(status: int) -> str | None:
    """None for a 2xx; otherwise the generic class recorded: `redirect` (never followed: it could
    point inside the network), `http_4xx`, `http_5xx`, or `http_other`."""
    if is_success(status):
        return None
    if 300 <= status < 400:
        return "redirect"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_5xx" if 500 <= status < 600 else "http_other"
