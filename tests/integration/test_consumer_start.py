"""A service input's consumer waits for a broker that is away while it starts, instead of exiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from aiokafka.admin import NewTopic

from libs.platform.consumer import InputConsumer
from libs.platform.kafka import KafkaAccess
from libs.platform.messaging import Incoming
from tests.support.forwarder import TcpForwarder
from tests.support.infra import Infra, free_port, fresh_name
from tests.support.kafka_io import Publisher

pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def process(self, records: Sequence[Incoming]) -> None:
        self.values.extend(r.value for r in records)


async def test_a_consumer_started_while_the_broker_is_away_joins_once_it_is_back_and_applies(
    infra: Infra,
) -> None:
    """The chaos run restarts the broker at random moments; one landed just after a restarted
    service's start-up checks and before its consumers joined, and the process exited."""
    prefix = fresh_name("cstart") + "."
    topic = prefix + "input"
    admin = infra.kafka.admin()
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    host, port = infra.bootstrap_servers.split(",")[0].rsplit(":", 1)
    gate = TcpForwarder(free_port(), host, int(port))
    recorder = Recorder()
    consumer = InputConsumer(
        kafka=KafkaAccess(f"127.0.0.1:{gate.port}", infra.security),
        topic=topic,
        group=prefix + "group",
        processor=recorder,
        client_id=prefix + "client",
    )
    publisher = Publisher(infra.kafka, "")
    await publisher.start()
    starting = asyncio.create_task(consumer.start())
    try:
        away_until = time.monotonic() + 3
        while time.monotonic() < away_until:  # no broker at its address for 3 s: still waiting
            assert not starting.done(), f"start gave up: {starting.exception()!r}"
            await asyncio.sleep(0.1)
        await gate.open()
        await asyncio.wait_for(starting, timeout=120)
        await publisher.send(topic, "k", b"after-the-restart")
        deadline = time.monotonic() + 120
        while b"after-the-restart" not in recorder.values:
            assert time.monotonic() < deadline, "the record was never applied"
            await asyncio.sleep(0.1)
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await consumer.stop()
        await publisher.stop()
        await gate.close()
