"""The outbox relay on the real broker and database: pipelined rounds lose nothing and keep order."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg
import orjson
import pytest

from libs.contracts import topics
from libs.platform.messaging import write_outbox
from libs.platform.records import Outgoing
from libs.platform.relay import OutboxRelay
from tests.support.infra import PROBE, Infra, fresh_environment
from tests.support.kafka_io import TopicWatcher

pytestmark = pytest.mark.integration


def _rows(topic: str, numbers: range) -> list[Outgoing]:
    return [
        Outgoing(topic=topic, key=f"k{n % 7}", value=orjson.dumps({"n": n}), headers={"event_id": f"e{n}"})
        for n in numbers
    ]


async def _outbox_size(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM probe.outbox"))
    finally:
        await conn.close()


async def test_rows_committed_while_rounds_await_the_broker_all_leave_once_in_order_per_key(
    infra: Infra,
) -> None:
    """Many small commits (each wakes the relay while earlier rounds are unacknowledged), and one
    transaction that took its id first but commits last: every row is sent exactly once, each key's
    rows in the order written, and the outbox ends empty."""
    environment = await fresh_environment(infra, schemas=PROBE)
    topic = environment.settings.topic(topics.ORDERS_STATUS)  # created, with several partitions
    dsn = environment.dsn
    relay = OutboxRelay(dsn=dsn, schema="probe", kafka=infra.kafka, client_id="relay-test", batch_size=40)
    watcher = TopicWatcher(infra.kafka, topic)
    writer = await asyncpg.connect(dsn, server_settings={"search_path": "probe"})
    late = await asyncpg.connect(dsn, server_settings={"search_path": "probe"})
    try:
        await watcher.start()
        relay.start()
        held = late.transaction()
        await held.start()
        await write_outbox(late, _rows(topic, range(10_000, 10_005)))  # the lowest ids, not committed
        for start in range(0, 1_200, 30):
            async with writer.transaction():
                await write_outbox(writer, _rows(topic, range(start, start + 30)))
            relay.wake()
        await watcher.wait_for(lambda r: len(r) >= 1_200, 90, "the 1,200 committed rows")
        assert not any(r["n"] >= 10_000 for r in watcher.records)  # not committed: not sent
        await held.commit()
        await watcher.wait_for(lambda r: len(r) >= 1_205, 60, "the late transaction's rows")
        deadline = asyncio.get_running_loop().time() + 30
        while await _outbox_size(dsn) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        assert await _outbox_size(dsn) == 0
        await watcher.caught_up()
        numbers = [r["n"] for r in watcher.records]
        assert sorted(numbers) == [*range(1_200), *range(10_000, 10_005)]  # each exactly once
        per_key: dict[bytes, list[int]] = defaultdict(list)
        for raw, record in zip(watcher.raw, watcher.records, strict=True):
            per_key[raw.key].append(record["n"])
        assert all(sent == sorted(sent) for sent in per_key.values())
    finally:
        await relay.stop()
        await watcher.stop()
        await writer.close()
        await late.close()
        await environment.drop()
