"""How simulated outside actors publish: like a careful client, retrying until acknowledged.

A producer that stops getting acknowledgements (after a broker restart aiokafka's idempotent
producer can retry forever on out-of-order sequence numbers) is replaced by a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaProducer

from libs.platform.kafka import KafkaAccess, close_quietly

SEND_TIMEOUT_S = 5.0


class ResilientSender:
    def __init__(self, kafka: KafkaAccess) -> None:
        self._kafka = kafka
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _current(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = self._kafka.producer(
                    enable_idempotence=True,
                    acks="all",
                    max_request_size=4 * 1024 * 1024,
                    request_timeout_ms=10000,
                )
                try:
                    await producer.start()
                except BaseException:
                    await close_quietly(producer)
                    raise
                self._producer = producer
            return self._producer

    async def _discard(self, producer: AIOKafkaProducer) -> None:
        async with self._lock:
            if self._producer is producer:
                self._producer = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), timeout=5)

    async def send(self, topic: str, value: bytes, key: str) -> None:
        """Returns once the broker acknowledged the record; retries (with a new producer if need be)."""
        while True:
            producer = None
            try:
                producer = await self._current()
                await asyncio.wait_for(producer.send_and_wait(topic, value, key=key.encode()), SEND_TIMEOUT_S)
                return
            except Exception:
                if producer is not None:
                    await self._discard(producer)
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._discard(self._producer)
