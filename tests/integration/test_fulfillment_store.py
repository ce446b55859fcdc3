"""Fulfillment's use cases on the real PostgreSQL: the same scenario as in memory, the statements
a batch costs (counted by the client), and one order's handlers kept apart by its lock.

Runs against the PostgreSQL named by DATABASE_URL (default: the project's own on 127.0.0.1:15432)
in a fresh database per test, dropped afterwards; it never starts or stops a server.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any, Protocol, TypeVar

import asyncpg
import pytest

from libs.contracts.envelope import Event
from libs.contracts.inventory import LocationUpdated
from libs.contracts.lifecycle import OrderCancelRefused, ShipmentShipped
from libs.contracts.vocabulary import LocationKind
from libs.platform.db import ensure_database, migrate
from libs.platform.messaging import Rejected
from libs.platform.stack import POSTGRES_PORT
from services.fulfillment.adapters.store import PgFulfillmentUnit
from services.fulfillment.app.ports import FulfillmentUnit
from services.fulfillment.app.use_cases import (
    apply_updates,
    decide_cancel,
    load_pipelines,
    receive_allocations,
    update_location,
)
from services.fulfillment.domain.shipments import Shipment
from tests.support.infra import fresh_name
from tests.unit.fakes.fulfillment import FakeFulfillmentUnit
from tests.unit.test_fulfillment_use_cases import MUNICH, allocated, cancel, update

pytestmark = pytest.mark.integration

CONFIG = load_pipelines()
SERVER = os.environ.get("DATABASE_URL") or f"postgresql://postgres@127.0.0.1:{POSTGRES_PORT}/postgres"
T = TypeVar("T")
UseCase = Callable[[FulfillmentUnit], Awaitable[T]]


class Runner(Protocol):
    async def __call__(self, use_case: UseCase[T]) -> T: ...


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    """A fresh database with fulfillment's schema, dropped afterwards."""
    name = fresh_name("fulfillment")
    url = f"{SERVER.rsplit('/', 1)[0]}/{name}"
    await ensure_database(url)
    try:
        await migrate(url, "fulfillment", "services.fulfillment.adapters.migrations")
        yield url
    finally:
        admin = await asyncpg.connect(SERVER)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass
class Pg:
    """Runs each use case in a transaction of its own and counts the statements it sent."""

    conn: asyncpg.Connection
    statements: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.conn.add_query_logger(lambda q: self.statements.append(q.query))

    async def __call__(self, use_case: UseCase[T]) -> T:
        async with self.conn.transaction():
            return await use_case(PgFulfillmentUnit(self.conn))

    async def counted(self, use_case: UseCase[T]) -> tuple[T, int]:
        before = len(self.statements)
        result = await self(use_case)
        return result, len([s for s in self.statements[before:] if ours(s)])


def ours(statement: str) -> bool:
    """Not the transaction's BEGIN/COMMIT, nor asyncpg's own type introspection (once per
    connection and type, not per batch)."""
    if "typeinfo_tree" in statement or "'jit'" in statement:
        return False
    return statement.split()[0].upper().rstrip(";") not in ("BEGIN", "COMMIT", "ROLLBACK")


@pytest.fixture
async def pg(dsn: str) -> AsyncIterator[Pg]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "fulfillment"})
    try:
        yield Pg(conn)
    finally:
        await conn.close()


def located(location_id: str, kind: str, position: tuple[float, float] | None = None) -> LocationUpdated:
    lat, lon = position or (None, None)
    return LocationUpdated(
        location_id=location_id,
        name=location_id,
        kind=LocationKind(kind),
        lat=lat,
        lon=lon,
        countries=["DE"],
        cost_per_shipment=Decimal("5.00"),
    )


def summary(outcome: Sequence[Event] | Rejected) -> Any:
    """An outcome without what differs from run to run (event ids, clocks)."""
    if isinstance(outcome, Rejected):
        return ("rejected", outcome.cause)
    return [
        (type(e).__name__, e.model_dump(mode="json", exclude={"event_id", "occurred_at", "eta"}))
        for e in outcome
    ]


def stored(shipments: Sequence[Shipment]) -> list[tuple[Any, ...]]:
    return [
        (s.shipment_id, s.pipeline, s.stage, s.active, dict(s.lines), s.carrier, s.tracking_number)
        for s in shipments
    ]


class Scenario:
    """An order life on two orders: allocated (one twice in a batch), moved, failed, waiting for
    stock, cancelled in part and whole, refused after shipping; every outcome summarised."""

    def __init__(self) -> None:
        self.o1 = allocated(("s1", "wh1", {"A": 3, "B": 1}))
        self.o1_again = allocated(
            ("s1", "wh1", {"A": 2, "B": 1}), ("s4", "wh2", {"E": 1}), order_id=self.o1.order_id
        )
        self.o2 = allocated(("s2", "wh1", {"C": 1}), ("s3", "drop", {"D": 1}), method="express")
        self.o2_waiting = allocated(("s2", "wh1", {"C": 1}), order_id=self.o2.order_id, backordered={"D": 1})
        self.cancels = [
            cancel(self.o1.order_id, {"A": 1}),
            cancel(self.o1.order_id),
            cancel(self.o2.order_id),
        ]

    async def run(self, run: Runner) -> tuple[list[Any], list[tuple[Any, ...]]]:
        seen: list[Any] = []
        for message in (
            located("wh1", "warehouse", MUNICH),
            located("wh2", "warehouse"),
            located("drop", "dropship"),
        ):
            await run(partial(update_location, message))
        seen.extend(
            map(
                summary,
                await run(lambda uow: receive_allocations([self.o1, self.o2, self.o1_again], uow, CONFIG)),
            )
        )
        updates = [
            update("s1", "picking"),
            update("s1", "packed"),
            update("s2", "shipped", carrier="DHL", tracking_number="JD1"),
            update("s3", "failed", note="damaged"),
            update("s1", "picking", update_id="s1:back"),
            update("ghost", "picking"),
            update("s2", "delivered", update_id="s2:shipped"),
        ]
        seen.extend(map(summary, await run(lambda uow: apply_updates(updates, uow, CONFIG))))
        seen.extend(map(summary, await run(lambda uow: receive_allocations([self.o2_waiting], uow, CONFIG))))
        for request in self.cancels:
            seen.append(summary(await run(partial(decide_cancel, request, config=CONFIG))))
        seen.extend(
            map(summary, await run(lambda uow: apply_updates([update("s2", "delivered")], uow, CONFIG)))
        )
        shipments = await run(lambda uow: uow.shipments.of_orders([self.o1.order_id, self.o2.order_id]))
        return seen, stored(shipments)


async def test_the_scenario_on_postgresql_causes_what_it_causes_in_memory(pg: Pg) -> None:
    scenario = Scenario()
    fake = FakeFulfillmentUnit()

    async def in_memory(use_case: UseCase[T]) -> T:
        return await use_case(fake)

    expected, expected_rows = await scenario.run(in_memory)
    seen, rows = await scenario.run(pg)
    assert seen == expected
    assert rows == expected_rows
    # Delivered, but D still waits for stock: the order stays partially shipped, nothing announced.
    assert [name for name, _ in seen[-1]] == ["StageChanged", "StageChanged"]
    assert ("rejected", "stage_backwards") in seen and ("rejected", "unknown_shipment") in seen
    outcome = await pg.conn.fetchval("SELECT outcome FROM applied_updates WHERE update_id = 's1:back'")
    assert outcome == "stage_backwards"


async def test_a_batch_of_new_orders_costs_five_statements_whatever_its_size(pg: Pg) -> None:
    await pg(lambda uow: update_location(located("wh", "warehouse", MUNICH), uow))
    batch = [allocated((f"a{i}", "wh", {"A": 2}), (f"b{i}", "wh", {"B": 2})) for i in range(50)]
    results, statements = await pg.counted(lambda uow: receive_allocations(batch, uow, CONFIG))
    assert len(results) == 50
    assert statements == 5  # lock the known orders, read locations, write orders, keep their terms
    # (prices and shipping, for refunds of returns), write shipments
    assert await pg.conn.fetchval("SELECT count(*) FROM shipments WHERE stage = 'new'") == 100
    assert await pg.conn.fetchval("SELECT count(*) FROM orders WHERE progress = 'in_fulfillment'") == 50

    again = [
        allocated((f"a{i}", "wh", {"A": 1}), (f"b{i}", "wh", {"B": 2}), order_id=fact.order_id)
        for i, fact in enumerate(batch)
    ]
    _, statements = await pg.counted(lambda uow: receive_allocations(again, uow, CONFIG))
    assert statements == 7  # ... and read their shipments, and write the changed ones


async def test_a_batch_of_stage_updates_costs_a_handful_of_statements_whatever_its_size(pg: Pg) -> None:
    batch = [allocated((f"s{i}", "wh", {"A": 1})) for i in range(50)]
    await pg(lambda uow: receive_allocations(batch, uow, CONFIG))
    picking = [update(f"s{i}", "picking") for i in range(50)]
    _, statements = await pg.counted(lambda uow: apply_updates(picking, uow, CONFIG))
    assert statements == 5  # lock orders, read shipments, claim update ids, write shipments, record outcomes
    shipped = [update(f"s{i}", "shipped") for i in range(50)]
    results, statements = await pg.counted(lambda uow: apply_updates(shipped, uow, CONFIG))
    assert all(not isinstance(r, Rejected) and len(r) == 3 for r in results)
    assert statements == 7  # ... and read locations for the ETAs, and write the orders' progress
    [refused], statements = await pg.counted(
        lambda uow: decide_cancel(cancel(batch[0].order_id), uow, CONFIG)
    )
    assert isinstance(refused, OrderCancelRefused)
    assert statements == 2  # lock the order, read its shipments (refused: nothing to write)


async def test_a_stage_update_waits_for_an_allocation_of_the_same_order_and_then_sees_it(
    pg: Pg, dsn: str
) -> None:
    fact = allocated(("s1", "wh", {"A": 3}))
    await pg(lambda uow: receive_allocations([fact], uow, CONFIG))
    other = await asyncpg.connect(dsn, server_settings={"search_path": "fulfillment"})
    try:
        reduced = allocated(("s1", "wh", {"A": 1}), order_id=fact.order_id)
        allocating = pg.conn.transaction()
        await allocating.start()
        await receive_allocations([reduced], PgFulfillmentUnit(pg.conn), CONFIG)

        async def move() -> Sequence[Sequence[Event] | Rejected]:
            async with other.transaction():
                return await apply_updates([update("s1", "shipped")], PgFulfillmentUnit(other), CONFIG)

        moving = asyncio.create_task(move())
        pid = other.get_server_pid()
        for _ in range(200):
            if (
                await pg.conn.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
                == "Lock"
            ):
                break
            await asyncio.sleep(0.02)
        assert (
            await pg.conn.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
            == "Lock"
        )
        assert not moving.done()
        await allocating.commit()
        [events] = await asyncio.wait_for(moving, 10)
        assert not isinstance(events, Rejected)
        [shipped] = [e for e in events if isinstance(e, ShipmentShipped)]
        assert [(line.sku, line.quantity) for line in shipped.lines] == [("A", 1)]
    finally:
        await other.close()
