"""Allocation's PostgreSQL adapter under its use cases: set-based statements, the oversell guard,
and the release and remainder scenarios of the unit tests, on the real database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar, cast
from uuid import UUID, uuid4

import asyncpg
import pytest

from libs.contracts.envelope import Event
from libs.contracts.inventory import LocationUpdated, StockAdjusted
from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderBackordered,
    OrderCancelAccepted,
    OrderCancelRequested,
    OrderValidated,
    ShipmentFailed,
    ShipmentShipped,
)
from libs.contracts.orders import OrderDetails, Shipment, ShipmentLine
from libs.contracts.vocabulary import LocationKind
from libs.platform.db import ensure_database, migrate
from services.allocation.adapters.store import PgAllocationUnit
from services.allocation.app.ports import OversellRefused
from services.allocation.app.use_cases import (
    adjust_stock,
    allocate_orders,
    fail_shipment,
    release_cancelled,
    request_cancel,
    rules_from,
    ship_shipment,
    update_location,
)
from services.allocation.domain.allocations import Reservation
from tests.support.infra import Infra, fresh_name
from tests.support.orders import order

pytestmark = pytest.mark.integration

RULES = rules_from(3, "0.01")
T = TypeVar("T")


class CountingConnection:
    """An asyncpg connection that remembers every statement sent through it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.statements: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def execute(self, query: str, *args: Any) -> Any:
        self.statements.append(query)
        return await self._conn.execute(query, *args)

    async def fetch(self, query: str, *args: Any) -> Any:
        self.statements.append(query)
        return await self._conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        self.statements.append(query)
        return await self._conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.statements.append(query)
        return await self._conn.fetchval(query, *args)


@pytest.fixture
async def conn(infra: Infra) -> AsyncIterator[asyncpg.Connection]:
    dsn = infra.database_url(fresh_name("db"))
    await ensure_database(dsn)
    await migrate(dsn, "allocation", "services.allocation.adapters.migrations")
    connection = await asyncpg.connect(dsn, server_settings={"search_path": "allocation"})
    try:
        yield connection
    finally:
        await connection.close()


async def step(conn: asyncpg.Connection, use_case: Callable[[PgAllocationUnit], Awaitable[T]]) -> T:
    """One use case in one transaction, as the router runs it."""
    async with conn.transaction():
        return await use_case(PgAllocationUnit(conn))


def location(
    location_id: str, kind: str = "warehouse", cost: str = "5.00", active: bool = True
) -> LocationUpdated:
    return LocationUpdated(
        location_id=location_id,
        name=location_id,
        kind=LocationKind(kind),
        countries=["DE"],
        cost_per_shipment=Decimal(cost),
        active=active,
    )


def arrival(sku: str, location_id: str, delta: int) -> StockAdjusted:
    return StockAdjusted(adjustment_id=str(uuid4()), sku=sku, location_id=location_id, delta=delta)


def validated(*lines: tuple[str, int]) -> OrderValidated:
    details = OrderDetails.model_validate(order(lines=[(sku, q, "10.00") for sku, q in lines]))
    return OrderValidated(order_id=uuid4(), order=details)


async def seed(
    conn: asyncpg.Connection, *stock: tuple[str, str, int], locations: list[LocationUpdated]
) -> None:
    for update in locations:
        await step(conn, partial(update_location, update, rules=RULES))
    for sku, location_id, units in stock:
        await step(conn, partial(adjust_stock, arrival(sku, location_id, units), rules=RULES))


async def allocate(conn: asyncpg.Connection, *facts: OrderValidated) -> list[Event]:
    results = await step(conn, lambda uow: allocate_orders(facts, uow, RULES))
    return [event for events in results for event in events]


async def reserved(conn: asyncpg.Connection, sku: str) -> int:
    return int(await conn.fetchval("SELECT coalesce(sum(reserved), 0) FROM stock WHERE sku = $1", sku))


async def status(conn: asyncpg.Connection, order_id: UUID) -> str:
    return str(await conn.fetchval("SELECT status FROM allocations WHERE order_id = $1", order_id))


async def test_a_chunk_of_twenty_orders_costs_seven_statements(conn: asyncpg.Connection) -> None:
    """Six to allocate them, and one to look up the erasures that cover their customers."""
    await seed(
        conn, ("A", "w1", 30), ("B", "w2", 30), ("C", "w2", 5), locations=[location("w1"), location("w2")]
    )
    facts = [validated(("A", 1), ("B", 1)) for _ in range(15)] + [validated(("C", 2)) for _ in range(5)]
    counting = CountingConnection(conn)
    async with conn.transaction():
        results = await allocate_orders(facts, PgAllocationUnit(cast(asyncpg.Connection, counting)), RULES)
    assert [type(e) for [e] in results] == [OrderAllocated] * 17 + [OrderBackordered] * 3
    assert len(counting.statements) == 7, counting.statements
    assert (await reserved(conn, "A"), await reserved(conn, "B"), await reserved(conn, "C")) == (15, 15, 4)
    assert await conn.fetchval("SELECT count(*) FROM reservations") == 15 * 2 + 2


async def test_reserving_more_than_is_free_is_refused_and_takes_nothing(conn: asyncpg.Connection) -> None:
    await seed(conn, ("A", "wh", 1), locations=[location("wh")])
    order_id = uuid4()
    too_many = [Reservation(order_id, "s1", "wh", "A", 1), Reservation(order_id, "s2", "wh", "A", 1)]
    with pytest.raises(OversellRefused):
        await step(conn, lambda uow: uow.stock.reserve(too_many))
    assert await reserved(conn, "A") == 0
    assert await conn.fetchval("SELECT count(*) FROM reservations") == 0
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE stock SET reserved = 2 WHERE sku = 'A'")


async def test_backorders_of_one_chunk_wait_in_the_order_they_came(conn: asyncpg.Connection) -> None:
    await seed(conn, locations=[location("wh")])
    facts = [validated(("NEW", 1)) for _ in range(5)]
    await allocate(conn, *facts)
    events = await step(conn, lambda uow: adjust_stock(arrival("NEW", "wh", 3), uow, RULES))
    assert [e.order_id for e in events if isinstance(e, OrderAllocated)] == [f.order_id for f in facts[:3]]


async def test_every_release_goes_to_the_oldest_waiting_backorder_first(conn: asyncpg.Connection) -> None:
    await seed(
        conn,
        ("FIFO", "wh", 2),
        ("OTHER", "wh", 1),
        ("FIFO", "store", 1),
        locations=[location("wh"), location("store", kind="store", active=False)],
    )
    [partial] = await allocate(conn, validated(("FIFO", 1), ("OTHER", 1)))
    [whole] = await allocate(conn, validated(("FIFO", 1)))
    assert isinstance(partial, OrderAllocated) and isinstance(whole, OrderAllocated)
    waiting = [validated(("FIFO", 1)) for _ in range(3)]
    for fact in waiting:
        await allocate(conn, fact)
    oldest, middle, youngest = (f.order_id for f in waiting)

    def woken(events: list[Event]) -> list[UUID]:
        return [e.order_id for e in events if isinstance(e, OrderAllocated) and e.cancel_request_id is None]

    release_whole = OrderCancelAccepted(
        order_id=whole.order_id, request_id="cx", release=whole.shipments, whole=True
    )
    assert woken(await step(conn, lambda uow: release_cancelled(release_whole, uow, RULES))) == [oldest]
    reactivated = location("store", kind="store")
    assert woken(await step(conn, lambda uow: update_location(reactivated, uow, RULES))) == [middle]
    [s] = partial.shipments
    one = [
        Shipment(
            shipment_id=s.shipment_id, location_id=s.location_id, lines=[ShipmentLine(sku="FIFO", quantity=1)]
        )
    ]
    release_one = OrderCancelAccepted(
        order_id=partial.order_id, request_id="px", lines=one[0].lines, release=one, whole=False
    )
    events = await step(conn, lambda uow: release_cancelled(release_one, uow, RULES))
    assert woken(events) == [youngest]
    assert await reserved(conn, "FIFO") == 3 and await reserved(conn, "OTHER") == 1
    assert await status(conn, partial.order_id) == "allocated"


async def test_a_failed_parcel_waits_for_stock_and_part_of_it_is_cancelled_at_allocation(
    conn: asyncpg.Connection,
) -> None:
    await seed(
        conn, ("X", "wh1", 1), ("Y", "wh2", 3), locations=[location("wh1", cost="1.00"), location("wh2")]
    )
    [event] = await allocate(conn, validated(("X", 1), ("Y", 3)))
    assert isinstance(event, OrderAllocated)
    by_location = {s.location_id: s for s in event.shipments}
    first, second = by_location["wh1"], by_location["wh2"]
    ship = ShipmentShipped(
        order_id=event.order_id, shipment_id=first.shipment_id, location_id="wh1", lines=first.lines
    )
    await step(conn, lambda uow: ship_shipment(ship, uow))
    fail = ShipmentFailed(
        order_id=event.order_id,
        shipment_id=second.shipment_id,
        location_id="wh2",
        lines=second.lines,
        reason="x",
    )
    [waits] = await step(conn, lambda uow: fail_shipment(fail, uow, RULES))
    assert isinstance(waits, OrderBackordered)
    assert (
        await conn.fetchval(
            "SELECT row(on_hand, reserved, shipped, written_off)::text FROM stock WHERE location_id = 'wh2'"
        )
        == "(0,0,0,3)"
    )

    request = OrderCancelRequested(
        order_id=event.order_id, request_id="rest", lines=[ShipmentLine(sku="Y", quantity=1)]
    )
    [reduced] = await step(conn, lambda uow: request_cancel(request, uow))
    assert isinstance(reduced, OrderAllocated)
    assert [(s.location_id, s.lines) for s in reduced.shipments] == [("wh1", first.lines)]
    assert [(line.sku, line.quantity) for line in reduced.backordered_lines] == [("Y", 2)]
    assert await status(conn, event.order_id) == "backordered"

    events = await step(conn, lambda uow: adjust_stock(arrival("Y", "wh2", 2), uow, RULES))
    [woken] = [e for e in events if isinstance(e, OrderAllocated)]
    assert sorted((s.location_id, [(x.sku, x.quantity) for x in s.lines]) for s in woken.shipments) == [
        ("wh1", [("X", 1)]),
        ("wh2", [("Y", 2)]),
    ]
    assert woken.backordered_lines == [] and await status(conn, event.order_id) == "allocated"
