"""Erasure on the real database: each service's SQL erases exactly what ``erase_order`` says, leaves
other customers and later orders alone, applies a request once; and an erasure and a transaction
storing an order of the same customer exclude each other, whichever starts first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID, uuid4

import asyncpg
import pytest

from libs.contracts.catalog import ProductUpdated
from libs.contracts.inventory import LocationUpdated, StockAdjusted
from libs.contracts.lifecycle import OrderAllocated, OrderReceived, OrderValidated
from libs.contracts.orders import OrderDetails, OrderSubmitted
from libs.contracts.privacy import ERASED_EMAIL, ErasureApplied, ErasureRequested, erase_order
from libs.contracts.vocabulary import LocationKind
from libs.platform.db import ensure_database, migrate
from libs.policy.channels import parse_policies
from services.allocation.adapters.store import PgAllocationUnit
from services.allocation.app import use_cases as allocation
from services.intake.adapters.store import PgIntakeUnit
from services.intake.app import use_cases as intake
from services.intake.domain.orders import order_id_for
from services.notification.adapters.store import PgNotificationUnit, SubscriptionCache
from services.notification.app import use_cases as notification
from services.notification.app.ports import NewEmail
from services.validation.adapters.store import PgValidationStore
from services.validation.app import use_cases as validation
from tests.support.infra import Infra, fresh_name
from tests.support.orders import erasure_request, order

pytestmark = pytest.mark.integration

T = TypeVar("T")
SCHEMAS = ("intake", "validation", "allocation", "notification")


@pytest.fixture
async def connect(infra: Infra) -> AsyncIterator[Callable[[str], Awaitable[asyncpg.Connection]]]:
    """Connections to a fresh database holding the four erasing services' schemas; dropped afterwards."""
    name = fresh_name("erasure")
    dsn = infra.database_url(name)
    await ensure_database(dsn)
    for schema in SCHEMAS:
        await migrate(dsn, schema, f"services.{schema}.adapters.migrations")
    opened: list[asyncpg.Connection] = []

    async def open_one(schema: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        opened.append(conn)
        return conn

    try:
        yield open_one
    finally:
        for conn in opened:
            await conn.close()
        admin = await asyncpg.connect(infra.server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def step(conn: asyncpg.Connection, unit: Callable[[asyncpg.Connection], Any], use_case: Any) -> Any:
    """One use case in one transaction, as the router runs it."""
    async with conn.transaction():
        return await use_case(unit(conn))


def details(external_id: str, customer: str, **fields: Any) -> OrderDetails:
    person = {"id": customer, "email": f"{customer}@example.com", "name": f"Name {customer}"}
    return OrderDetails.model_validate(
        order(external_id, customer_id=customer) | {"customer": person} | fields
    )


def erasure(customer: str, request_id: str = "er-1", **fields: Any) -> ErasureRequested:
    return ErasureRequested.model_validate(erasure_request(customer, request_id=request_id, **fields))


async def stored(conn: asyncpg.Connection, sql: str, order_id: UUID) -> OrderDetails:
    return OrderDetails.model_validate_json(await conn.fetchval(sql, order_id))


def report(events: list[Any]) -> tuple[str, int, int]:
    [event] = events
    assert isinstance(event, ErasureApplied)
    return event.service, event.orders, event.rows_changed


async def test_intakes_sql_erases_what_erase_order_says_once_and_nothing_else(connect: Any) -> None:
    conn = await connect("intake")
    mine, later, other = (
        details("a", "c1"),
        details("b", "c1", placed_at="2026-11-29T00:00:00Z"),
        details("c", "c2"),
    )
    submitted = [OrderSubmitted.model_validate(d.model_dump(mode="json")) for d in (mine, later, other)]
    await step(conn, PgIntakeUnit, lambda uow: intake.record_submissions(submitted, uow))
    sql = "SELECT details::text FROM orders WHERE order_id = $1"

    outcome = await step(conn, PgIntakeUnit, lambda uow: intake.erase_customer(erasure("c1"), uow))

    assert report(outcome) == ("intake", 1, 1)
    assert await stored(conn, sql, order_id_for("webshop", "a")) == erase_order(mine)
    assert await stored(conn, sql, order_id_for("webshop", "b")) == later
    assert await stored(conn, sql, order_id_for("webshop", "c")) == other
    assert await step(conn, PgIntakeUnit, lambda uow: intake.erase_customer(erasure("c1"), uow)) == []
    assert await conn.fetchval(
        "SELECT (orders, rows_changed) = (1, 1) FROM erasures WHERE request_id = 'er-1'"
    )
    assert await conn.fetchval("SELECT count(*) FROM erasures WHERE customer_digest LIKE '%c1%'") == 0


async def test_validations_sql_forgets_the_history_and_daily_units_and_erases_held_orders(
    connect: Any,
) -> None:
    conn = await connect("validation")
    policies = {"version": 1, "defaults": {"supported_countries": ["DE"], "hold_threshold": "100"}}
    policy = validation.policy_from(parse_policies(policies, "test"))
    product = ProductUpdated(sku="SKU-1", name="Mug", price=Decimal("10.00"), currency="EUR")
    await step(conn, PgValidationStore, lambda uow: validation.update_product(product, uow))
    big = [("SKU-1", 20, "10.00")]
    held = OrderReceived(order_id=uuid4(), order=details("a", "c1", **_lines(big)))
    other = OrderReceived(order_id=uuid4(), order=details("b", "c2", **_lines(big)))
    small = OrderReceived(order_id=uuid4(), order=details("c", "c1"))
    await step(
        conn, PgValidationStore, lambda uow: validation.validate_orders([held, other, small], uow, policy)
    )
    units = {(f"webshop:{c}", date(2026, 11, 27), "SKU-1"): 2 for c in ("c1", "c2")}
    units[("marketplace:c1", date(2026, 11, 27), "SKU-1")] = 1
    await step(conn, PgValidationStore, lambda uow: uow.customers.add_daily_units(units))
    sql = "SELECT order_details::text FROM held_orders WHERE order_id = $1"

    outcome = await step(conn, PgValidationStore, lambda uow: validation.erase_customer(erasure("c1"), uow))

    assert report(outcome) == ("validation", 1, 3), "a held order, the history and a units row"
    assert await stored(conn, sql, held.order_id) == erase_order(held.order)
    assert await stored(conn, sql, other.order_id) == other.order
    assert await conn.fetchval("SELECT array_agg(customer_key) FROM customers") is None
    assert await conn.fetchval(
        "SELECT array_agg(customer_key ORDER BY customer_key) FROM customer_daily_units"
    ) == ["marketplace:c1", "webshop:c2"]


async def test_allocations_sql_erases_the_kept_details_and_a_late_order_is_stored_erased(
    connect: Any,
) -> None:
    conn = await connect("allocation")
    rules = allocation.rules_from(3, "0.01")
    where = LocationUpdated(
        location_id="wh",
        name="wh",
        kind=LocationKind.WAREHOUSE,
        countries=["DE"],
        cost_per_shipment=Decimal(1),
    )
    stock = StockAdjusted(adjustment_id="adj", sku="SKU-1", location_id="wh", delta=10)
    await step(conn, PgAllocationUnit, lambda uow: allocation.update_location(where, uow, rules))
    await step(conn, PgAllocationUnit, lambda uow: allocation.adjust_stock(stock, uow, rules))
    mine, other = (
        OrderValidated(order_id=uuid4(), order=details(x, c)) for x, c in (("a", "c1"), ("b", "c2"))
    )
    await step(conn, PgAllocationUnit, lambda uow: allocation.allocate_orders([mine, other], uow, rules))
    sql = "SELECT order_details::text FROM allocations WHERE order_id = $1"

    outcome = await step(conn, PgAllocationUnit, lambda uow: allocation.erase_customer(erasure("c1"), uow))
    late = OrderValidated(order_id=uuid4(), order=details("late", "c1"))
    [[allocated]] = await step(
        conn, PgAllocationUnit, lambda uow: allocation.allocate_orders([late], uow, rules)
    )

    assert report(outcome) == ("allocation", 1, 1)
    assert await stored(conn, sql, mine.order_id) == erase_order(mine.order)
    assert await stored(conn, sql, other.order_id) == other.order
    assert await stored(conn, sql, late.order_id) == erase_order(late.order)
    assert isinstance(allocated, OrderAllocated) and allocated.order == erase_order(late.order)


async def test_notifications_sql_erases_contacts_and_cancels_their_emails(connect: Any) -> None:
    conn = await connect("notification")
    cache = SubscriptionCache()

    def unit(c: asyncpg.Connection) -> PgNotificationUnit:
        return PgNotificationUnit(c, cache)

    mine, other = (
        OrderReceived(order_id=uuid4(), order=details(x, c)) for x, c in (("a", "c1"), ("b", "c2"))
    )
    await step(conn, unit, lambda uow: notification.remember_customers([mine, other], uow))
    await conn.execute(
        "INSERT INTO emails (order_id, status, context, state, last_error) VALUES"
        " ($1, 'received', '{}', 'sent', '550 <c1@example.com> refused'), ($1, 'shipped', '{}', 'pending', NULL),"
        " ($2, 'received', '{}', 'pending', NULL)",
        mine.order_id,
        other.order_id,
    )

    outcome = await step(conn, unit, lambda uow: notification.erase_customer(erasure("c1"), uow))

    assert report(outcome) == ("notification", 1, 3)
    contact = await conn.fetchrow(
        "SELECT email, name, customer_id, erased_at FROM customers WHERE order_id = $1", mine.order_id
    )
    assert (contact["email"], contact["customer_id"]) == (ERASED_EMAIL, None) and contact[
        "erased_at"
    ] is not None
    emails = await conn.fetch(
        "SELECT order_id, status, state, last_error FROM emails ORDER BY order_id, status"
    )
    assert {(r["order_id"], r["status"]): (r["state"], r["last_error"]) for r in emails} == {
        (mine.order_id, "received"): ("sent", None),
        (mine.order_id, "shipped"): ("cancelled", None),
        (other.order_id, "received"): ("pending", None),
    }
    await step(conn, unit, lambda uow: uow.emails.add([_email(mine.order_id, "delivered")]))
    assert await conn.fetchval("SELECT count(*) FROM emails WHERE order_id = $1", mine.order_id) == 2


async def test_an_erasure_waits_for_an_order_being_stored_and_then_erases_it(connect: Any) -> None:
    storing, erasing, observer = await connect("intake"), await connect("intake"), await connect("intake")
    late = OrderSubmitted.model_validate(details("a", "c1").model_dump(mode="json"))
    async with storing.transaction():
        await intake.record_submissions([late], PgIntakeUnit(storing))
        erased = asyncio.create_task(
            step(erasing, PgIntakeUnit, lambda uow: intake.erase_customer(erasure("c1"), uow))
        )
        await _waits_for_a_lock(observer, erasing, erased)
    assert report(await erased) == ("intake", 1, 1)
    kept = await stored(
        observer, "SELECT details::text FROM orders WHERE order_id = $1", order_id_for("webshop", "a")
    )
    assert kept.customer.email == ERASED_EMAIL


async def test_an_order_stored_while_an_erasure_is_applied_waits_for_it_and_is_stored_erased(
    connect: Any,
) -> None:
    storing, erasing, observer = await connect("intake"), await connect("intake"), await connect("intake")
    late = OrderSubmitted.model_validate(details("a", "c1").model_dump(mode="json"))
    async with erasing.transaction():
        await intake.erase_customer(erasure("c1"), PgIntakeUnit(erasing))
        recorded = asyncio.create_task(
            step(storing, PgIntakeUnit, lambda uow: intake.record_submissions([late], uow))
        )
        await _waits_for_a_lock(observer, storing, recorded)
    [[_, received]] = await recorded
    assert isinstance(received, OrderReceived) and received.order.customer.email == ERASED_EMAIL
    kept = await stored(
        observer, "SELECT details::text FROM orders WHERE order_id = $1", order_id_for("webshop", "a")
    )
    assert kept == erase_order(received.order)


def _lines(lines: list[tuple[str, int, str]]) -> dict[str, Any]:
    total = sum(Decimal(p) * q for _, q, p in lines)
    return {
        "lines": [{"sku": s, "quantity": q, "unit_price": p} for s, q, p in lines],
        "payment": {"status": "authorized", "reference": "pay", "amount": str(total)},
    }


def _email(order_id: UUID, status: str) -> NewEmail:
    return NewEmail(order_id, status, {"tracking": "to follow"})


async def _waits_for_a_lock(
    observer: asyncpg.Connection, waiter: asyncpg.Connection, task: asyncio.Task[T]
) -> None:
    pid = waiter.get_server_pid()
    for _ in range(300):
        if await observer.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        ):
            break
        await asyncio.sleep(0.05)
    assert (
        await observer.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid) == "Lock"
    )
    assert not task.done()
