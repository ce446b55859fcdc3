"""Effectively-once application of a poll's records on top of at-least-once Kafka.

The records of one input are applied in PostgreSQL transactions (shaped by the input's ``Shape``)
that also
- claim each record's id in the service's ``inbox`` (a redelivered record changes nothing),
- write the events the handlers returned to the ``outbox`` (relayed to Kafka after commit),
- write dead letters for records that can never be applied (also through the outbox).
The consumer commits offsets only after these transactions commit. Transient failures (database
or broker unavailable, a deadlock) are retried with back-off and never dead-lettered; a poison
record is dead-lettered alone, so it never stops or stalls the consumer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from libs.platform import metrics, tracing
from libs.platform.messaging import (
    TRANSIENT_ERRORS,
    Incoming,
    Outgoing,
    Rejected,
    claim,
    dead_letter,
    take_key_locks,
    write_outbox,
)
from libs.platform.routing import BoundInput, Item, KeyedLanes, LockedChunks, WholeBatch

log = logging.getLogger("baton.processing")


class InputProcessor:
    """Applies the records of one input of one service, durably."""

    def __init__(
        self,
        *,
        service: str,
        bound: BoundInput[Any],
        pool: Callable[[], asyncpg.Pool],
        dead_letter_topic: str,
        on_commit: Callable[[], None],
        group: str | None = None,
        lanes: int = 4,
        chunk: int = 500,
        retry_for_s: float = 60.0,
    ) -> None:
        self._service = service
        self._bound = bound
        self._pool = pool
        self._dead_letter_topic = dead_letter_topic
        self._on_commit = on_commit
        self._group = group
        self._lanes = max(1, lanes)
        self._chunk = max(1, chunk)
        self._retry_for_s = retry_for_s

    @property
    def name(self) -> str:
        return self._bound.name

    async def process(self, records: Sequence[Incoming]) -> None:
        """Apply the records durably, retrying transient failures; raises only if they persist."""
        items = [self._bound.parse(r) for r in records if self._bound.wants(r)]
        if skipped := len(records) - len(items):
            metrics.count(metrics.RECORDS, self._service, self.name, "skipped", amount=skipped)
        if not items:
            return
        shape = self._bound.shape
        if isinstance(shape, WholeBatch):
            await self._durably(items)
            return
        if isinstance(shape, LockedChunks):
            # In poll order, one chunk after the other: lanes of chunks would mostly wait for each
            # other's key locks (popular skus are in every chunk) and pay a transaction each.
            await self._in_locked_chunks(items)
            return
        assert isinstance(shape, KeyedLanes)
        lanes: dict[int, list[Item]] = {}
        for item in items:
            lanes.setdefault(zlib.crc32((item.record.key or "").encode()) % self._lanes, []).append(item)
        await asyncio.gather(*(self._one_by_one(lane) for lane in lanes.values()))

    async def _one_by_one(self, items: Sequence[Item]) -> None:
        for item in items:
            await self._durably([item])

    async def _in_locked_chunks(self, items: Sequence[Item]) -> None:
        chunk: list[Item] = []
        keys: set[str] = set()
        for item in items:
            wanted = self._bound.lock_keys(item)
            if wanted is None:
                if chunk:
                    await self._durably(chunk, sorted(keys))
                    chunk, keys = [], set()
                await self._durably([item])
                continue
            chunk.append(item)
            keys.update(wanted)
            if len(chunk) >= self._chunk:
                await self._durably(chunk, sorted(keys))
                chunk, keys = [], set()
        if chunk:
            await self._durably(chunk, sorted(keys))

    async def _durably(self, items: Sequence[Item], locks: Sequence[str] = ()) -> None:
        started = time.monotonic()
        delay = 0.1
        while True:
            try:
                await self._transaction(items, locks)
                self._on_commit()
                return
            except TRANSIENT_ERRORS as exc:
                if time.monotonic() - started > self._retry_for_s:
                    raise
                log.warning("transient failure, retrying", extra={"error": repr(exc), "records": len(items)})
                await asyncio.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, 5.0)

    async def _transaction(self, items: Sequence[Item], locks: Sequence[str] = ()) -> None:
        started = time.perf_counter()
        try:
            with (
                tracing.transaction(self._service, self.name, len(items)),
                metrics.held_until_commit() as counted,
            ):
                async with self._pool().acquire() as conn, conn.transaction():
                    if locks:
                        await take_key_locks(conn, locks)
                    await self._apply(conn, items)
        except TRANSIENT_ERRORS:
            raise
        except Exception:
            if len(items) == 1:
                await self._dead_letter_after_failure(items[0])
                return
            log.warning("transaction failed; isolating the poison record", exc_info=True)
            for item in items:
                await self._transaction([item])
            return
        metrics.apply(counted)
        metrics.BATCH_SECONDS.labels(self._service, self.name).observe(time.perf_counter() - started)

    async def _apply(self, conn: asyncpg.Connection, items: Sequence[Item]) -> None:
        fresh = await claim(conn, [i.message_id for i in items])
        to_apply: list[Item] = []
        outcomes: Counter[str] = Counter()
        for item in items:
            if item.message_id not in fresh:
                outcomes["duplicate"] += 1
                continue
            fresh.discard(item.message_id)  # a duplicate inside the same batch applies once
            to_apply.append(item)
        out: list[Outgoing] = []
        with self._record_spans() as spans:
            results = await self._bound.apply(conn, to_apply, spans.handling) if to_apply else []
            for item, result in zip(to_apply, results, strict=True):
                if isinstance(result, Rejected):
                    log.info("dead-lettering record", extra=_about(item, cause=result.cause))
                    caused = [
                        dead_letter(
                            self._dead_letter_topic,
                            item.record,
                            result.cause,
                            result.detail,
                            source_id=item.message_id,
                        )
                    ]
                    outcome, cause = "dead_lettered", result.cause
                    metrics.count(metrics.DEAD_LETTERS, self._service, result.cause)
                else:
                    caused, outcome, cause = result, "applied", None
                outcomes[outcome] += 1
                spans.finish(item.record, caused, outcome, cause)
                out.extend(caused)
        for outcome, n in outcomes.items():
            metrics.count(metrics.RECORDS, self._service, self.name, outcome, amount=n)
        await write_outbox(conn, out)

    async def _dead_letter_after_failure(self, item: Item) -> None:
        """The record failed on its own with a non-transient error: park it with the cause."""
        detail = traceback.format_exc(limit=5)
        log.error("record failed permanently; dead-lettering", extra=_about(item))
        letter = dead_letter(
            self._dead_letter_topic, item.record, "processing_failed", detail, source_id=item.message_id
        )
        self._record_spans().finish(item.record, [letter], "dead_lettered", "processing_failed")
        async with self._pool().acquire() as conn, conn.transaction():
            await claim(conn, [item.message_id])
            await write_outbox(conn, [letter])
        metrics.count(metrics.DEAD_LETTERS, self._service, "processing_failed")
        metrics.count(metrics.RECORDS, self._service, self.name, "dead_lettered")

    def _record_spans(self) -> tracing.RecordSpans:
        return tracing.RecordSpans(
            self._service, self.name, self._group, trust_event_id=self._bound.trusts_event_ids
        )


def _about(item: Item, **extra: str) -> dict[str, str]:
    """Log fields naming a record (and its order, when it names one) outside its handler."""
    fields = {"source": item.message_id, **extra}
    if order_id := tracing.order_id_of(item.record):
        fields["order_id"] = order_id
    return fields


__all__ = ["InputProcessor", "Outgoing", "Rejected"]
