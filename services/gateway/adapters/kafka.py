"""The gateway's Kafka side: an idempotent producer (acks=all) for orders, cancel and edit requests, and a
follower of the channel keys on the compacted `notification.api-keys.v1`.

The follower reads the key topic whole from its beginning, in no consumer group (every process keeps
every key; nothing is committed), and keeps reading. It is ready once it has reached the end the
topic had when it started, so a process never refuses a key that existed before it came up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from libs.api_keys import ApiKey, KeyRing
from libs.contracts.notification import ApiKeyChanged
from libs.contracts.orders import CancelRequested, EditRequested, OrderSubmitted
from libs.contracts.topics import ORDERS_CANCEL_REQUESTED, ORDERS_EDIT_REQUESTED, ORDERS_SUBMITTED
from libs.platform.kafka import KafkaAccess, close_quietly
from services.gateway.app.ports import BrokerUnavailable

log = logging.getLogger("baton.gateway")

HEADERS = [("content-type", b"application/json")]


class KafkaOrderCommands:
    """Implements ``OrderCommands``: one record per call, answered once every in-sync replica has it."""

    def __init__(self, kafka: KafkaAccess, *, prefix: str, timeout_s: float) -> None:
        self._kafka = kafka
        self._producer: AIOKafkaProducer | None = None
        self._prefix = prefix
        self._timeout_s = timeout_s
        self.started = False

    async def start(self) -> None:
        self._producer = self._kafka.producer(
            enable_idempotence=True, acks="all", client_id="baton-gateway", linger_ms=1
        )
        await self._producer.start()
        self.started = True

    async def stop(self) -> None:
        """Sends in flight are flushed first (stop waits for them)."""
        self.started = False
        await close_quietly(self._producer)
        self._producer = None

    async def submit(self, order: OrderSubmitted) -> None:
        await self._send(
            ORDERS_SUBMITTED, order.channel_key, order.model_dump_json(exclude_none=True).encode()
        )

    async def cancel(self, request: CancelRequested) -> None:
        await self._send(
            ORDERS_CANCEL_REQUESTED,
            str(request.order_id),
            request.model_dump_json(exclude_none=True).encode(),
        )

    async def edit(self, request: EditRequested) -> None:
        await self._send(
            ORDERS_EDIT_REQUESTED,
            str(request.order_id),
            request.model_dump_json(exclude_none=True).encode(),
        )

    async def _send(self, topic: str, key: str, value: bytes) -> None:
        if self._producer is None:
            raise BrokerUnavailable("not connected")
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._producer.send_and_wait(
                    self._prefix + topic, value, key=key.encode(), headers=list(HEADERS)
                )
        except (KafkaError, TimeoutError) as exc:
            log.warning("record not acknowledged", extra={"topic": topic, "error": type(exc).__name__})
            raise BrokerUnavailable(type(exc).__name__) from exc


class KafkaKeyDirectory:
    """Implements ``KeyDirectory`` from the key topic. A record that is not a valid command is skipped
    (notification dead-letters it; here it simply grants nothing)."""

    def __init__(self, kafka: KafkaAccess, topic: str) -> None:
        self._topic = topic
        self._kafka = kafka
        self._consumer: AIOKafkaConsumer | None = None
        self._ring = KeyRing()
        self._caught_up = False
        self._task: asyncio.Task[None] | None = None
        self.read_at = 0.0

    def find(self, key_digest: str) -> ApiKey | None:
        return self._ring.find(key_digest)

    def ready(self) -> bool:
        return self._caught_up

    def healthy(self, within_s: float) -> bool:
        return self._caught_up and time.monotonic() - self.read_at < within_s

    async def start(self, timeout_s: float = 60.0) -> None:
        """Assign every partition of the key topic and read from its beginning in the background."""
        self._consumer = consumer = self._kafka.consumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="baton-gateway-keys",
        )
        await consumer.start()
        deadline = time.monotonic() + timeout_s
        while not (parts := consumer.partitions_for_topic(self._topic)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {self._topic} is not visible")
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)
        partitions = [TopicPartition(self._topic, p) for p in sorted(parts)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        self._task = asyncio.create_task(self._follow(consumer, ends), name="gateway-keys")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await close_quietly(self._consumer)
        self._consumer = None

    async def _follow(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            except KafkaError as exc:
                log.warning("key topic not readable", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
                continue
            self.read_at = time.monotonic()
            for records in batches.values():
                for record in records:
                    self._apply(record.key, record.value)
            if not self._caught_up and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                self._caught_up = True
                log.info("channel keys read", extra={"keys": len(self._ring)})

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:  # a tombstone (compaction then forgets the key id): the key is gone for good
            if key is not None:
                self._ring.revoke(key.decode(errors="replace"))
            return
        try:
            change = ApiKeyChanged.model_validate_json(value)
        except ValidationError:
            log.warning("key command skipped: not a valid ApiKeyChanged")
            return
        if change.action == "revoke":
            self._ring.revoke(change.key_id)
        elif change.key_hash is not None:
            self._ring.add(
                change.key_id, change.key_hash, frozenset(change.channels), change.role, change.name
            )
