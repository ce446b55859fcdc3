"""The outbox relay: moves committed outbox rows to Kafka and deletes them once the broker acknowledged.

One relay per service schema is active at a time (a PostgreSQL advisory lock elects it), so rows
leave in the order they were written and one order's events keep their causal order even when
several processes of the service run. Standby relays take over within a second when the leader's
connection drops. The relay is woken right after a local commit and by NOTIFY from other
processes, with a slow poll as a safety net. A crash between the broker's acknowledgement and
the delete re-sends rows; consumers drop them by ``event_id`` in their inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import zlib
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from libs.platform import metrics, tracing
from libs.platform.db import session_settings
from libs.platform.kafka import KafkaAccess

log = logging.getLogger("baton.relay")

POLL_INTERVAL_S = 1.0
SEND_TIMEOUT_S = 5.0


def relay_lock_id(schema: str) -> int:
    return zlib.crc32(f"baton-relay:{schema}".encode())


class KeyHashes:
    """Kafka's default key partitioning (murmur2, as every Kafka client computes it), remembered per
    key: an order's events share its key, and aiokafka computes murmur2 in pure Python (a few per
    cent of a service's CPU in the profiles)."""

    def __init__(self, size: int = 65_536) -> None:
        self._hashes: dict[bytes, int] = {}
        self._size = size

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._size:
                self._hashes.clear()  # cheaper than LRU bookkeeping; keys of one order come together
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


def make_producer(kafka: KafkaAccess, client_id: str, *, linger_ms: int = 2) -> AIOKafkaProducer:
    """Idempotent producer, acks from all in-sync replicas: no loss, no broker-side duplicates.

    ``linger_ms`` lets ``send`` per record fill batches; the outbox relay builds whole batches
    itself and passes 0, since lingering would only delay each batch at every hop."""
    return kafka.producer(
        client_id=client_id,
        partitioner=KeyHashes(),
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        max_request_size=2 * 1024 * 1024,
        request_timeout_ms=30000,
    )


class OutboxRelay:
    def __init__(
        self,
        *,
        dsn: str,
        schema: str,
        kafka: KafkaAccess,
        client_id: str,
        batch_size: int,
        exit_after_send: bool = False,
    ) -> None:
        """``exit_after_send`` is fault injection for tests: die after the broker acknowledged a batch
        and before the rows are deleted — the window in which a crash re-sends events."""
        self._dsn = dsn
        self._schema = schema
        self._kafka = kafka
        self._client_id = client_id
        self._batch_size = batch_size
        self._exit_after_send = exit_after_send
        self._hashes = KeyHashes()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._schema}")

    async def stop(self) -> None:
        """Flush what is committed (best effort) and stop."""
        self._stopping.set()
        self._wake.set()
        if self._task:
            try:
                await asyncio.wait_for(self._task, timeout=10)
            except TimeoutError:
                self._task.cancel()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay interrupted; retrying", extra={"error": repr(exc)})
                await self._sleep(1.0)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def _lead(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, server_settings=session_settings(self._dsn, self._schema, f"relay-{self._schema}")
        )
        producer: AIOKafkaProducer | None = None
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", relay_lock_id(self._schema)):
                if self._stopping.is_set():
                    return
                await self._sleep(POLL_INTERVAL_S)
            await conn.add_listener(f"outbox_{self._schema}", self._on_notify)
            producer = make_producer(self._kafka, self._client_id, linger_ms=0)
            await producer.start()
            log.info("outbox relay leading", extra={"schema": self._schema})
            while True:
                sent = await self._relay_once(conn, producer)
                if sent == 0:
                    if self._stopping.is_set():
                        return
                    await self._sleep(POLL_INTERVAL_S)
        finally:
            if producer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), timeout=10)
            if not conn.is_closed():
                await conn.close()

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _relay_once(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        self._wake.clear()
        started_ns = tracing.now_ns()
        rows = await conn.fetch(
            "SELECT id, topic, key, value, headers FROM outbox ORDER BY id LIMIT $1", self._batch_size
        )
        if not rows:
            return 0

        row_headers = [orjson.loads(row["headers"]) for row in rows]

        async def send_all() -> None:
            """One record batch per partition, built here rather than by ``producer.send`` per
            record (a third of the producer's CPU per record in a profile): rows keep their order
            within a partition, and a full batch is sent before the next one for it is started."""
            futures = []
            partitions: dict[str, list[int]] = {}
            open_batches: dict[tuple[str, int], BatchBuilder] = {}
            for row, header_map in zip(rows, row_headers, strict=True):
                topic, key = row["topic"], row["key"].encode()
                if (all_partitions := partitions.get(topic)) is None:
                    all_partitions = partitions[topic] = sorted(await producer.partitions_for(topic))
                partition = self._hashes(key, all_partitions, all_partitions)
                headers = [(k, str(v).encode()) for k, v in header_map.items()]
                batch = open_batches.get((topic, partition))
                if batch is None:
                    batch = open_batches[(topic, partition)] = producer.create_batch()
                value = bytes(row["value"])
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = open_batches[(topic, partition)] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers)  # first fits
            for (topic, partition), batch in open_batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.gather(*futures)

        with tracing.relay_send(
            self._schema, self._client_id, [r["topic"] for r in rows], row_headers, started_ns
        ):
            # A producer that cannot get a batch acknowledged in time (a broker restart can leave an
            # idempotent aiokafka producer retrying forever on out-of-order sequence numbers) is
            # abandoned: the caller starts a fresh one and the rows, still in the outbox, are sent again.
            await asyncio.wait_for(send_all(), timeout=SEND_TIMEOUT_S)
            if self._exit_after_send:
                os._exit(86)
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        self.sent += len(rows)
        metrics.OUTBOX_RELAYED.labels(self._schema).inc(len(rows))
        return len(rows)
