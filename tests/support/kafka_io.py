"""Talking to the real broker from tests: publish raw records, and watch topics with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError

from libs.platform.kafka import KafkaAccess


class Publisher:
    def __init__(self, kafka: KafkaAccess, prefix: str) -> None:
        self._producer = kafka.producer(enable_idempotence=True, acks="all", max_request_size=4 * 1024 * 1024)
        self._prefix = prefix

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(
        self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None = None
    ) -> None:
        if isinstance(value, bytes):
            payload = value
        elif hasattr(value, "model_dump_json"):
            payload = value.model_dump_json().encode()
        else:
            payload = orjson.dumps(value)
        await self._producer.send_and_wait(
            self._prefix + topic,
            payload,
            key=key.encode() if key is not None else None,
            headers=[(k, v.encode()) for k, v in (headers or {}).items()],
        )

    async def send_many(self, topic: str, items: list[tuple[str, Any]]) -> None:
        futures = []
        for key, value in items:
            payload = value if isinstance(value, bytes) else orjson.dumps(value)
            futures.append(await self._producer.send(self._prefix + topic, payload, key=key.encode()))
        await asyncio.gather(*futures)


class TopicWatcher:
    """Reads a topic from the beginning in the background and keeps every record."""

    def __init__(self, kafka: KafkaAccess, topic: str) -> None:
        self.topic = topic
        self.records: list[dict[str, Any]] = []
        self.raw: list[Any] = []
        self._consumer = kafka.consumer(enable_auto_commit=False, auto_offset_reset="earliest", group_id=None)
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self._consumer.start()
        deadline = time.monotonic() + 30
        while not (parts := self._consumer.partitions_for_topic(self.topic)):
            if self.topic in self._consumer._client.cluster.unauthorized_topics:
                raise TopicAuthorizationFailedError(
                    f"may not read {self.topic}"
                )  # assign() would wait forever
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {self.topic} never appeared")
            await self._consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)
        self._consumer.assign([TopicPartition(self.topic, p) for p in parts])
        await self._consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self.raw.append(record)
                    try:
                        self.records.append(orjson.loads(record.value))
                    except orjson.JSONDecodeError:
                        self.records.append({"_raw": record.value})
                self._changed.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def caught_up(self, timeout: float = 60) -> None:
        """Wait until every record on the topic right now has been read here."""
        partitions = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while any([await self._consumer.position(tp) < end for tp, end in ends.items()]):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic} not read to its end after {timeout}s")
            await asyncio.sleep(0.1)

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str
    ) -> None:
        """Wait until ``predicate(records)`` holds, or fail with what was seen."""
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; saw {len(self.records)} records"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))


def statuses_by_order(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_order: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if "order_id" in record:
            by_order.setdefault(record["order_id"], []).append(record)
    return by_order


def latest_status(records: list[dict[str, Any]], external_id: str) -> str | None:
    found = [r for r in records if r.get("external_id") == external_id]
    return max(found, key=lambda r: r["version"])["status"] if found else None


async def wait_consumed(kafka: KafkaAccess, group: str, topic: str, timeout: float = 60) -> None:
    """Wait until ``group`` has committed past every record now on ``topic``: a barrier that proves
    a consumer has seen (and applied) everything before it, without guessing how long that takes."""
    admin = kafka.admin()
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while True:
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            behind = {
                tp: end
                for tp, end in ends.items()
                if end > 0 and (tp not in committed or committed[tp].offset < end)
            }
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{group} has not consumed {topic} up to {behind} after {timeout}s")
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
        await admin.close()
