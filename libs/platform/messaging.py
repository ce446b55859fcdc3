"""Effectively-once message handling on top of at-least-once Kafka.

A batch of records is applied in one PostgreSQL transaction that also
- claims each record's id in the service's ``inbox`` (a redelivered record changes nothing),
- writes the events the handlers caused to the ``outbox`` (relayed to Kafka after commit),
- writes dead letters for records that can never be applied (also through the outbox).
Offsets are committed only after that transaction commits. Transient failures (database or broker
unavailable) are retried with back-off and never dead-lettered; a poison record is dead-lettered
alone, so it never stops or stalls the consumer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import orjson
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanContext
from pydantic import TypeAdapter, ValidationError

from libs.contracts.envelope import Event
from libs.platform import metrics, tracing

log = logging.getLogger("baton.messaging")

T = TypeVar("T")

MAX_DEAD_LETTER_BYTES = 512 * 1024

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.TooManyConnectionsError,
    OSError,
    TimeoutError,
    KafkaError,
)


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
    def event(cls, topic: str, key: str, event: Event) -> Outgoing:
        return cls(
            topic=topic,
            key=key,
            value=event.model_dump_json().encode(),
            headers={
                "event_id": str(event.event_id),
                "event_type": event.event_type,
                "content-type": "application/json",
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


Handler = Callable[[asyncpg.Connection, Incoming], Awaitable[list[Outgoing]]]
BatchHandler = Callable[[asyncpg.Connection, Sequence[Incoming]], Awaitable[list[list[Outgoing] | Rejected]]]
"""Applies many records with set-based statements; returns one result per record, in order: the
events it caused, or why it can never be applied. Raising fails the batch (records are then
retried one by one)."""


def one_at_a_time(batch_handler: BatchHandler) -> Handler:
    """A record handler that runs a batch handler on one record (for callers without a batch)."""

    async def handle(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        [result] = await batch_handler(conn, [record])
        if isinstance(result, Rejected):
            raise result
        return result

    return handle


REPLAYED_FROM_HEADER = "dlq-replayed-from"
"""Set by `baton dlq replay` on a record sent back to its source topic: `<dead-letter topic>@<offset>`."""


def dead_letter(service_topic: str, record: Incoming, cause: str, detail: str) -> Outgoing:
    """The record as it came (value, key and every header, so a replay restores it exactly), plus
    ``dlq-*`` headers saying why and where from."""
    value = record.value[:MAX_DEAD_LETTER_BYTES]
    original = {k: v for k, v in record.headers.items() if not k.startswith("dlq-")}
    return Outgoing(
        topic=service_topic,
        key=record.key or "",
        value=value,
        headers={
            **original,
            "dlq-id": str(uuid.uuid4()),
            "dlq-cause": cause,
            "dlq-error": detail[:2000],
            "dlq-source-topic": record.topic,
            "dlq-source-partition": str(record.partition),
            "dlq-source-offset": str(record.offset),
            "dlq-source-message-id": record.message_id,
            "dlq-truncated": "true" if len(record.value) > MAX_DEAD_LETTER_BYTES else "false",
            "dlq-at": str(time.time()),
        },
    )


async def claim(conn: asyncpg.Connection, message_ids: Sequence[str]) -> set[str]:
    """Record ids in the inbox; returns those not seen before (the ones to apply)."""
    rows = await conn.fetch(
        "INSERT INTO inbox (message_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING message_id",
        list(message_ids),
    )
    return {r["message_id"] for r in rows}


async def write_outbox(conn: asyncpg.Connection, records: Iterable[Outgoing]) -> int:
    """One statement for all of a transaction's events, ids assigned in the order given (the relay
    sends by id, so one order's events keep their order)."""
    rows = list(records)
    if not rows:
        return 0
    await conn.execute(
        "INSERT INTO outbox (topic, key, value, headers)"
        " SELECT t, k, v, h::jsonb FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[])"
        " WITH ORDINALITY AS o(t, k, v, h, n) ORDER BY n",
        [r.topic for r in rows],
        [r.key for r in rows],
        [r.value for r in rows],
        [orjson.dumps(r.headers).decode() for r in rows],
    )
    return len(rows)


class BatchProcessor:
    """Applies batches of records for one subscription of one service."""

    def __init__(
        self,
        *,
        pool: Callable[[], asyncpg.Pool],
        handler: Handler,
        dead_letter_topic: str,
        on_commit: Callable[[], None],
        retry_for_s: float = 60.0,
        service: str = "",
        subscription: str = "",
        lanes: int = 0,
        batch_handler: BatchHandler | None = None,
        lock_keys: Callable[[Incoming], list[str] | None] | None = None,
        chunk: int = 1,
    ) -> None:
        """``lanes`` > 0: records of different keys are applied concurrently over that many lanes
        (one key always in one lane, in order), in small transactions instead of one per batch.

        With ``lock_keys``, consecutive records whose keys are known share a transaction of up to
        ``chunk`` records that takes all their locks first, in key order, so transactions of
        different processes wait for each other but never deadlock. A record whose keys are not
        known beforehand gets a transaction of its own."""
        self._lanes = lanes
        self._batch_handler = batch_handler
        self._lock_keys = lock_keys
        self._chunk = max(1, chunk)
        self._service = service
        self._subscription = subscription
        self._pool = pool
        self._handler = handler
        self._dead_letter_topic = dead_letter_topic
        self._on_commit = on_commit
        self._retry_for_s = retry_for_s

    async def process(self, records: Sequence[Incoming]) -> None:
        """Apply the batch durably, retrying transient failures; raises only if they persist."""
        if not records:
            return
        if self._lanes:
            lanes: dict[int, list[Incoming]] = {}
            for record in records:
                lanes.setdefault(zlib.crc32((record.key or "").encode()) % self._lanes, []).append(record)
            await asyncio.gather(*(self._apply_one_by_one(lane) for lane in lanes.values()))
            return
        await self._durably(records)

    async def _apply_one_by_one(self, records: Sequence[Incoming]) -> None:
        chunk: list[Incoming] = []
        keys: set[str] = set()
        for record in records:
            wanted = self._lock_keys(record) if self._lock_keys is not None else None
            if wanted is None:
                if chunk:
                    await self._durably(chunk, sorted(keys))
                    chunk, keys = [], set()
                await self._durably([record])
                continue
            chunk.append(record)
            keys.update(wanted)
            if len(chunk) >= self._chunk:
                await self._durably(chunk, sorted(keys))
                chunk, keys = [], set()
        if chunk:
            await self._durably(chunk, sorted(keys))

    async def _durably(self, records: Sequence[Incoming], locks: Sequence[str] = ()) -> None:
        started = time.monotonic()
        delay = 0.1
        while True:
            try:
                await self._apply_batch(records, locks)
                self._on_commit()
                return
            except TRANSIENT_ERRORS as exc:
                if time.monotonic() - started > self._retry_for_s:
                    raise
                log.warning(
                    "transient failure, retrying batch", extra={"error": repr(exc), "records": len(records)}
                )
                await asyncio.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, 5.0)

    async def _apply_batch(self, records: Sequence[Incoming], locks: Sequence[str] = ()) -> None:
        started = time.perf_counter()
        started_ns = tracing.now_ns()
        try:
            with metrics.held_until_commit() as counted:
                async with self._pool().acquire() as conn, conn.transaction():
                    if locks:
                        await take_key_locks(conn, locks)
                    spans = await self._apply(conn, records)
        except TRANSIENT_ERRORS:
            raise
        except Exception:
            if len(records) == 1:
                await self._dead_letter_after_failure(records[0])
                return
            log.warning("batch failed; isolating the poison record", exc_info=True)
            for record in records:
                await self._apply_batch([record])
            return
        metrics.apply(counted)
        metrics.BATCH_SECONDS.labels(self._service, self._subscription).observe(time.perf_counter() - started)
        if tracing.enabled():
            tracing.batch_span(
                f"{self._service} transaction {self._subscription}",
                started_ns,
                len(records),
                spans,
                **{"db.system": "postgresql", "baton.service": self._service},
            )

    async def _apply(self, conn: asyncpg.Connection, records: Sequence[Incoming]) -> list[SpanContext | None]:
        fresh = await claim(conn, [r.message_id for r in records])
        to_apply: list[Incoming] = []
        outcomes: Counter[str] = Counter()
        for record in records:
            if record.message_id not in fresh:
                outcomes["duplicate"] += 1
                continue
            fresh.discard(record.message_id)  # a duplicate inside the same batch applies once
            to_apply.append(record)
        traced = tracing.enabled()
        results: list[tuple[Incoming, list[Outgoing] | Rejected, int]] = []
        if self._batch_handler is not None and to_apply:
            started_ns = tracing.now_ns() if traced else 0
            results = [
                (record, result, started_ns)
                for record, result in zip(to_apply, await self._batch_handler(conn, to_apply), strict=True)
            ]
        else:
            for record in to_apply:
                started_ns = tracing.now_ns() if traced else 0
                try:
                    results.append((record, await self._handler(conn, record), started_ns))
                except Rejected as rejected:
                    results.append((record, rejected, started_ns))
        out: list[Outgoing] = []
        spans: list[SpanContext | None] = []
        for record, result, started_ns in results:
            if isinstance(result, Rejected):
                log.info("dead-lettering record", extra={"cause": result.cause, "source": record.message_id})
                caused = [dead_letter(self._dead_letter_topic, record, result.cause, result.detail)]
                outcome = "dead_lettered"
                metrics.count(metrics.DEAD_LETTERS, self._service, result.cause)
            else:
                caused, outcome = result, "applied"
            outcomes[outcome] += 1
            if traced:
                spans.append(
                    tracing.record_span(
                        self._service, self._subscription, record, caused, started_ns, outcome
                    )
                )
            out.extend(caused)
        for outcome, n in outcomes.items():
            metrics.count(metrics.RECORDS, self._service, self._subscription, outcome, amount=n)
        await write_outbox(conn, out)
        return spans

    async def _dead_letter_after_failure(self, record: Incoming) -> None:
        """The record failed on its own with a non-transient error: park it with the cause."""
        detail = traceback.format_exc(limit=5)
        log.error("record failed permanently; dead-lettering", extra={"source": record.message_id})
        async with self._pool().acquire() as conn, conn.transaction():
            await claim(conn, [record.message_id])
            await write_outbox(
                conn, [dead_letter(self._dead_letter_topic, record, "processing_failed", detail)]
            )
        metrics.count(metrics.DEAD_LETTERS, self._service, "processing_failed")
        metrics.count(metrics.RECORDS, self._service, self._subscription, "dead_lettered")


KEY_LOCK_CLASS = 7_001
"""First key of Baton's two-key advisory locks on business keys (a space apart from the relay's)."""


async def take_key_locks(conn: asyncpg.Connection, keys: Sequence[str]) -> None:
    """Transaction-scoped locks on business keys (skus, ...), always taken in key order.

    Re-entrant: a handler may ask again for a key its transaction already holds."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($2, hashtext(k))"
        " FROM (SELECT DISTINCT k FROM unnest($1::text[]) AS k ORDER BY k) AS ordered",
        list(keys),
        KEY_LOCK_CLASS,
    )


def headers_dict(raw: Any) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in raw or ()}


def parse(adapter: TypeAdapter[T], record: Incoming) -> T:
    """Read an untrusted record into a contract, or reject it with a cause a person can act on."""
    try:
        return adapter.validate_json(record.value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        cause = "invalid_json" if any(e["type"] == "json_invalid" for e in errors) else "schema_violation"
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors[:20]
        )
        raise Rejected(cause, detail) from None
