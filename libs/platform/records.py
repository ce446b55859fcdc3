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

MAX_DEAD_LETTER_BYTES = 512 * 1024

REPLAYED_FROM_HEADER = "dlq-replayed-from"
"""Set by `baton dlq replay` on a record sent back to its source topic: `<dead-letter topic>@<offset>`."""

CORRELATION_ID_HEADER = "correlation_id"
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
    def message_id(self) -> str:
        """Baton's own events carry ``event_id``; foreign input is identified by its position.

        A record replayed from a dead-letter topic keeps its original headers (``event_id``
        included), but its first delivery is in the inbox already: the replay is told apart by the
        dead letter it came from, so it is applied once per replayed dead letter."""
        base = self.headers.get("event_id") or f"{self.topic}/{self.partition}/{self.offset}"
        replayed_from = self.headers.get(REPLAYED_FROM_HEADER)
        return f"{base}/replay/{replayed_from}" if replayed_from else base

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
    def events(cls, topics: Sequence[str], key: str, event: Event) -> list[Outgoing]:
        """The same event (one serialisation, one ``event_id``) to each of ``topics``."""
        value = event.model_dump_json().encode()
        headers = {
            "event_id": str(event.event_id),
            "event_type": event.event_type,
            "content-type": "application/json",
            CORRELATION_ID_HEADER: key,
        }
        return [cls(topic=t, key=key, value=value, headers=dict(headers)) for t in topics]

    @classmethod
    def event(cls, topic: str, key: str, event: Event) -> Outgoing:
        return cls(
            topic=topic,
            key=key,
            value=event.model_dump_json().encode(),
            headers={
                "event_id": str(event.event_id),
                "event_type": event.event_type,
                "content-type": "application/json",
                CORRELATION_ID_HEADER: key,
            },
        )


class Rejected(Exception):
    """A record that can never be applied (bad JSON, wrong shape, a failed non-transient check).

    Raise it before writing anything: the record goes to the service's dead-letter topic with
    ``cause`` and ``detail`` and the consumer moves on.
    """

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause
        self.detail = detail


def dead_letter(service_topic: str, record: Incoming, cause: str, detail: str) -> Outgoing:
    """The record as it came (value, key and every header, so a replay restores it exactly), plus
    ``dlq-*`` headers saying why and where from."""
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
            "dlq-source-message-id": record.message_id,
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
    payload (cut at 512 KB) with ``dlq-cause``, ``dlq-error``, ``dlq-at`` and the given headers."""
    return Outgoing(
        topic=service_topic,
        key=key,
        value=value[:MAX_DEAD_LETTER_BYTES],
        headers={
            **(headers or {}),
            "dlq-id": str(uuid.uuid4()),
            "dlq-cause": cause,
            "dlq-error": detail[:2000],
            "dlq-truncated": "true" if len(value) > MAX_DEAD_LETTER_BYTES else "false",
            "dlq-at": str(time.time()),
        },
    )


def headers_dict(raw: Any) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in raw or ()}
