"""Scaling proven locally: allocation goes from one process to three while orders flow.

The partitions of its consumer group are spread over the three members, every order is allocated
exactly once with stock conserved. The allocation rate with one and with three processes is
printed (`pytest -s`), not asserted: speed on a shared 2-core machine is `make bench`'s business,
and this test must stay green while the machine is busy.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import TopicPartition

from libs.contracts import topics
from libs.contracts.lifecycle import OrderValidated
from libs.contracts.orders import OrderDetails
from libs.platform.lag import LagProbe
from libs.platform.messaging import Outgoing
from libs.platform.settings import BatonSettings
from tests.support.fleet import Fleet
from tests.support.infra import Infra, fresh_environment
from tests.support.kafka_io import Publisher
from tests.support.orders import adjustment, location, order

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ORDERS = 20_000
SKUS = 300
UNITS_PER_SKU = 80  # 24,000 units for 20,000 one-unit orders: nothing backorders
WINDOW_S = 10.0
STALL_S = 60.0


class Scenario:
    def __init__(self, settings: BatonSettings, fleet: Fleet, database: str, dsn: str) -> None:
        self.settings = settings
        self.fleet = fleet
        self.database = database
        self.dsn = dsn

    async def allocated(self) -> int:
        conn = await asyncpg.connect(self.dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM allocation.allocations"))
        except asyncpg.UndefinedTableError:
            return 0
        finally:
            await conn.close()

    async def rate_over(self, seconds: float) -> float:
        """Orders allocated per second over a window, from the service's own table; the window closes
        early if the backlog runs low, so idle time never dilutes the figure."""
        start_count, started = await self.allocated(), time.monotonic()
        count = start_count
        while time.monotonic() - started < seconds and count < ORDERS * 0.95:
            await asyncio.sleep(0.25)
            count = await self.allocated()
        return (count - start_count) / (time.monotonic() - started)


@pytest.fixture
async def scenario(e2e_infra: Infra, tmp_path: Path) -> AsyncIterator[Scenario]:
    environment = await fresh_environment(e2e_infra, "scale")
    # One-record transactions per process: on a 2-core machine a single process with its default
    # chunks (a whole poll per transaction) already takes most of the CPU PostgreSQL leaves, so this
    # measures how work spreads over processes (each its own unit of capacity, as pods on their own
    # cores are), not how many cores this machine has.
    single_lane = {"BATON_RECORD_LANES": "1", "BATON_RECORD_CHUNK": "1"}
    fleet = environment.fleet(tmp_path, single_lane)
    try:
        yield Scenario(environment.settings, fleet, environment.database, environment.dsn)
    finally:
        fleet.stop()
        await environment.drop()


async def _seed_stock_and_backlog(settings: BatonSettings) -> list[str]:
    publisher = Publisher(settings.kafka, settings.topic_prefix)
    await publisher.start()
    try:
        await publisher.send(topics.INVENTORY_LOCATIONS, "wh-1", location("wh-1", lat=52.4, lon=13.1))
        await publisher.send_many(
            topics.INVENTORY_ADJUSTMENTS,
            [
                (f"sku-{i}", adjustment(f"seed-{i}", f"sku-{i}", "wh-1", delta=UNITS_PER_SKU))
                for i in range(SKUS)
            ],
        )
    finally:
        await publisher.stop()
    producer = settings.kafka.producer(enable_idempotence=True, acks="all", linger_ms=20)
    await producer.start()
    order_ids = []
    try:
        futures = []
        for n in range(ORDERS):
            order_id = uuid.uuid4()
            details = OrderDetails.model_validate(
                order(f"scale-{n}", lines=[(f"sku-{n % SKUS}", 1, "10.00")])
            )
            fact = Outgoing.event(
                settings.topic(topics.facts_topic("allocation")),
                str(order_id),
                OrderValidated(order_id=order_id, order=details),
                producer="validation",
            )
            futures.append(
                await producer.send(
                    fact.topic,
                    fact.value,
                    key=fact.key.encode(),
                    headers=[(k, v.encode()) for k, v in fact.headers.items()],
                )
            )
            order_ids.append(str(order_id))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return order_ids


async def _allocated_event_ids(settings: BatonSettings) -> dict[str, set[str]]:
    """Every order.allocated fact sent to fulfillment, by order: event ids seen per order."""
    consumer = settings.kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        topic = settings.topic(topics.facts_topic("fulfillment"))
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert parts, f"no partitions for {topic}"
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        seen: dict[str, set[str]] = defaultdict(set)

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in parts])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
                    if headers.get("event_type") == "order.allocated":
                        seen[record.key.decode()].add(headers["event_id"])
        return seen
    finally:
        await consumer.stop()


async def _wait_for_members(
    probe: LagProbe, group: str, members: int, timeout: float = 90
) -> dict[str, list]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        owned = await probe.assignment(group)
        if len(owned) == members and all(owned.values()):
            return owned
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} never had {members} members with partitions: {owned}")
        await asyncio.sleep(0.5)


async def test_allocation_scales_from_one_to_three_processes_while_orders_flow(scenario: Scenario) -> None:
    settings = scenario.settings
    group = settings.group("allocation", "order_facts")
    probe = LagProbe(settings.kafka)
    try:
        scenario.fleet.start("allocation", "allocation.1")
        # Stock and locations first, applied before any order arrives.
        order_ids = await _seed_stock_and_backlog(settings)
        deadline = time.monotonic() + 120
        while await scenario.allocated() < 300:
            assert time.monotonic() < deadline, "allocation never started allocating"
            await asyncio.sleep(0.2)
        one = await _wait_for_members(probe, group, 1)
        assert len(next(iter(one.values()))) == 8

        rate_one = await scenario.rate_over(WINDOW_S)

        scenario.fleet.start("allocation", "allocation.2")
        scenario.fleet.start("allocation", "allocation.3")
        three = await _wait_for_members(probe, group, 3)
        assigned = [tp for parts in three.values() for tp in parts]
        assert len(assigned) == len(set(assigned)) == 8, f"partitions not spread once each: {three}"
        rate_three = await scenario.rate_over(WINDOW_S)
        remaining = ORDERS - await scenario.allocated()
        print(
            f"\nallocation: 1 process {rate_one:.0f} orders/s, 3 processes {rate_three:.0f} orders/s "
            f"(x{rate_three / rate_one:.2f}); partitions {[len(p) for p in three.values()]}; "
            f"{remaining} orders still queued at the end of the second window"
        )

        # Every order must be allocated; on a busy machine that takes long, so the deadline moves
        # while allocation makes progress and the test fails only when it stalls for a minute.
        allocated, stalled_since = await scenario.allocated(), time.monotonic()
        while allocated < ORDERS:
            assert time.monotonic() - stalled_since < STALL_S, (
                f"allocation stalled at {allocated} of {ORDERS} for {STALL_S:.0f} s"
            )
            now_allocated = await scenario.allocated()
            if now_allocated > allocated:
                allocated, stalled_since = now_allocated, time.monotonic()
            scenario.fleet.assert_alive()
            await asyncio.sleep(0.5)

        conn = await asyncpg.connect(scenario.dsn)
        try:
            statuses = dict(
                await conn.fetch("SELECT status, count(*) FROM allocation.allocations GROUP BY status")
            )
            reserved_units = await conn.fetchval("SELECT sum(quantity) FROM allocation.reservations")
            stock = await conn.fetchrow(
                "SELECT sum(on_hand) AS on_hand, sum(reserved) AS reserved,"
                " count(*) FILTER (WHERE reserved > on_hand) AS oversold FROM allocation.stock"
            )
        finally:
            await conn.close()
        assert statuses == {"allocated": ORDERS}
        assert reserved_units == ORDERS
        assert (stock["on_hand"], stock["reserved"], stock["oversold"]) == (SKUS * UNITS_PER_SKU, ORDERS, 0)

        events = await _allocated_event_ids(settings)
        assert set(events) == set(order_ids), "every order has its allocated fact"
        doubled = {o: ids for o, ids in events.items() if len(ids) != 1}
        assert not doubled, f"orders allocated twice: {list(doubled.items())[:3]}"

    finally:
        await probe.stop()
