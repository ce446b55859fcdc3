"""Allocation's stock locking on the real PostgreSQL, with interleaving forced rather than hoped for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from uuid import uuid4

import asyncpg
import pytest

from libs.contracts.inventory import StockAdjusted
from libs.contracts.lifecycle import OrderAllocated, OrderBackordered, OrderValidated
from libs.contracts.orders import OrderDetails
from libs.platform.db import ensure_database, migrate
from services.allocation.adapters.store import PgAllocationUnit, PgLocations
from services.allocation.app.use_cases import adjust_stock, allocate_orders
from services.allocation.domain.sourcing import Location, Rules
from tests.support.infra import Infra, fresh_name
from tests.support.orders import order

pytestmark = pytest.mark.integration


@asynccontextmanager
async def two_connections_with_a_warehouse(
    infra: Infra,
) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    """A fresh allocation schema with warehouse `wh`, and two connections to race on it."""
    dsn = infra.database_url(fresh_name("db"))
    await ensure_database(dsn)
    await migrate(dsn, "allocation", "services.allocation.adapters.migrations")
    first = await asyncpg.connect(dsn, server_settings={"search_path": "allocation"})
    second = await asyncpg.connect(dsn, server_settings={"search_path": "allocation"})
    try:
        await PgLocations(first).upsert(Location("wh", "warehouse", frozenset({"DE"}), Decimal(5)), "wh")
        yield first, second
    finally:
        await first.close()
        await second.close()


async def waits_for_a_lock(observer: asyncpg.Connection, waiter: asyncpg.Connection, task: object) -> None:
    """The waiter's backend is blocked on a lock (seen by PostgreSQL itself), and its task not done."""
    pid = waiter.get_server_pid()
    for _ in range(300):
        if await observer.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        ):
            break
        await asyncio.sleep(0.05)
    assert await observer.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid) == (
        "Lock"
    ), "the second transaction must wait for the first one's lock"
    assert isinstance(task, asyncio.Task) and not task.done()


def validated(sku: str) -> OrderValidated:
    return OrderValidated(
        order_id=uuid4(), order=OrderDetails.model_validate(order(lines=[(sku, 1, "10.00")]))
    )


async def test_a_second_order_for_the_last_unit_waits_for_the_first_and_is_backordered(infra: Infra) -> None:
    async with two_connections_with_a_warehouse(infra) as (first, second):
        await first.execute("INSERT INTO stock (sku, location_id, on_hand) VALUES ('LAST', 'wh', 1)")

        tx1 = first.transaction()
        await tx1.start()
        [[one]] = await allocate_orders([validated("LAST")], PgAllocationUnit(first), Rules())
        assert isinstance(one, OrderAllocated)

        async def allocate_second() -> type:
            async with second.transaction():
                [[out]] = await allocate_orders([validated("LAST")], PgAllocationUnit(second), Rules())
                return type(out)

        racing = asyncio.create_task(allocate_second())
        await waits_for_a_lock(first, second, racing)
        await tx1.commit()
        assert await asyncio.wait_for(racing, 10) is OrderBackordered
        row = await first.fetchrow("SELECT on_hand, reserved FROM stock WHERE sku = 'LAST'")
        assert (row["on_hand"], row["reserved"]) == (1, 1)


async def test_an_order_backordered_while_the_first_stock_of_its_sku_arrives_is_allocated_by_that_arrival(
    infra: Infra,
) -> None:
    """The stock row does not exist yet, so no row lock can order the two transactions."""
    async with two_connections_with_a_warehouse(infra) as (first, second):
        fact = validated("NEW")

        tx1 = first.transaction()
        await tx1.start()
        [[out]] = await allocate_orders([fact], PgAllocationUnit(first), Rules())
        assert isinstance(out, OrderBackordered)

        async def first_delivery() -> list[type]:
            async with second.transaction():
                arrival = StockAdjusted(adjustment_id="first", sku="NEW", location_id="wh", delta=3)
                caused = await adjust_stock(arrival, PgAllocationUnit(second), Rules())
                return [type(e) for e in caused]

        racing = asyncio.create_task(first_delivery())
        await waits_for_a_lock(first, second, racing)
        await tx1.commit()
        assert await asyncio.wait_for(racing, 10) == [OrderAllocated]
        status = await first.fetchval("SELECT status FROM allocations WHERE order_id = $1", fact.order_id)
        assert status == "allocated"
