"""The records a service reads and writes, and what it gives up on: plain data, no I/O.

Use cases may import this module (``Rejected``, ``dead_letter_of``): it pulls in no driver.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from libs.contracts.envelope import Event
from libs.contracts.headers import CORRELATION_ID, REPLAYED_FROM, event_headers

MAX_DEAD_LETTER_BYTES = 512 * 1024

REPLAYED_FROM_HEADER = REPLAYED_FROM
"""Set by `baton dlq replay` on a record sent back to its source topic: `<dead-letter topic>@<offset>`."""

CORRELATION_ID_HEADER = CORRELATION_ID
"""On every event Baton sends: its key, which is the order id for every event about an order
(`<channel>:<external_id>` for a refused submission), so a consumer that propagates no trace
context can still put one order's events together."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One Kafka record as a service sees it: raw bytes plus where it came from."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    def message_id(self, *, trust_event_id: bool) -> str:
        """How the inbox recognises this record when it comes again.

        On a topic only Baton's services write (``trust_event_id``): the ``event_id`` header, since the
        outbox relay may send one event twice, at two offsets. A record replayed from a dead-letter
        topic keeps its headers, ``event_id`` included, but its first delivery is in the inbox
        already: the replay is told apart by the dead letter it came from, so it is applied once per
        replayed dead letter.

        On a topic outsiders write (channels, warehouses, the catalog, operators' commands): the
        record's position, never a header. A producer picks its headers, so a forged ``event_id`` (or
        replay header) could claim the id of a record still to come and have it dropped as a
        duplicate. A redelivered record has the same position; a record sent twice is applied twice,
        and those contracts are idempotent by their own keys (``external_id``, ``update_id``,
        ``adjustment_id``, ...)."""
        if not trust_event_id:
            return self.position
        base = self.headers.get("event_id") or self.position
        replayed_from = self.headers.get(REPLAYED_FROM_HEADER)
        return storable(f"{base}/replay/{replayed_from}" if replayed_from else base)

    @property
    def event_type(self) -> str | None:
        return self.headers.get("event_type")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to publish once the transaction that caused it commits."""

    topic: str
    key: str
    value: bytes
    headers: dict[str, str]

    @classmethod
    def events(cls, topics: Sequence[str], key: str, event: Event, *, producer: str) -> list[Outgoing]:
        """The same event (one serialisation, one ``event_id``) to each of ``topics``, with its
        headers: Baton's and the CloudEvents binary-mode ones (``libs/contracts/headers.py``),
        ``producer`` being the service that publishes it."""
        value = event.model_dump_json().encode()
        headers = event_headers(event, producer, key)
        return [cls(topic=t, key=key, value=value, headers=dict(headers)) for t in topics]

    @classmethod
    def event(cls, topic: str, key: str, event: Event, *, producer: str) -> Outgoing:
        return cls.events((topic,), key, event, producer=producer)[0]


class Rejected(Exception):
    """A record that can never be applied (bad JSON, wrong shape, a failed non-transient check).

    Raise it before writing anything: the record goes to the service's dead-letter topic with
    ``cause`` and ``detail`` and the consumer moves on.
    """

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause
        self.detail = detail


def dead_letter(service_topic: str, record: Incoming, cause: str, detail: str, *, source_id: str) -> Outgoing:
    """The record as it came (value, key and every header, so a replay restores it exactly), plus
    ``dlq-*`` headers saying why and where from; ``source_id`` is its inbox id."""
    original = {k: v for k, v in record.headers.items() if not k.startswith("dlq-")}
    return dead_letter_of(
        service_topic,
        key=record.key or "",
        value=record.value,
        cause=cause,
        detail=detail,
        headers={
            **original,
            "dlq-source-topic": record.topic,
            "dlq-source-partition": str(record.partition),
            "dlq-source-offset": str(record.offset),
            "dlq-source-message-id": source_id,
        },
    )


def dead_letter_of(
    service_topic: str,
    *,
    key: str,
    value: bytes,
    cause: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Outgoing:
    """A dead letter of anything a service gave up on (a record, an undeliverable webhook): the
    payload (cut at 512 KB) with ``dlq-cause``, ``dlq-error``, ``dlq-at`` and the given headers.

    The key and header values are stored as PostgreSQL text (and jsonb) in the outbox, which cannot
    hold NUL: a NUL in a hostile record's key or headers is replaced (U+FFFD) rather than failing
    the transaction that parks the record. The value travels as bytes, exactly as it came."""
    return Outgoing(
        topic=service_topic,
        key=storable(key),
        value=value[:MAX_DEAD_LETTER_BYTES],
        headers={
            storable(k): storable(v)
            for k, v in {
                **(headers or {}),
                "dlq-id": str(uuid.uuid4()),
                "dlq-cause": cause,
                "dlq-error": detail[:2000],
                "dlq-truncated": "true" if len(value) > MAX_DEAD_LETTER_BYTES else "false",
                "dlq-at": str(time.time()),
            }.items()
        },
    )


def storable(text: str) -> str:
    """``text`` as PostgreSQL text can hold it: no NUL, no lone surrogate."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def headers_dict(raw: Any) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in raw or ()}
