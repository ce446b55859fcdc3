"""Allocation's inputs: locations, stock adjustments, and validated orders."""

from __future__ import annotations

import asyncpg
import orjson
from pydantic import TypeAdapter

from libs.contracts import topics
from libs.contracts.inventory import LocationUpdated, StockAdjusted
from libs.contracts.lifecycle import (
    LifecycleFact,
    OrderCancelAccepted,
    OrderCancelRequested,
    OrderValidated,
    ShipmentFailed,
    ShipmentShipped,
)
from libs.platform.messaging import Incoming, Outgoing, parse
from libs.platform.service import Runtime, Subscription
from services.allocation.adapters.ledger import PgOrderReservations, PgStockLedger
from services.allocation.app.use_cases import (
    adjust_stock,
    allocate_order,
    fail_shipment,
    release_cancelled,
    request_cancel,
    rules_from,
    ship_shipment,
    update_location,
)

LOCATION = TypeAdapter(LocationUpdated)
ADJUSTMENT = TypeAdapter(StockAdjusted)
FACT: TypeAdapter[LifecycleFact] = TypeAdapter(LifecycleFact)
ORDER_FACTS = frozenset(
    {
        "order.validated",
        "order.cancel-requested",
        "order.cancel-accepted",
        "shipment.shipped",
        "shipment.failed",
    }
)


def skus_to_lock(record: Incoming) -> list[str] | None:
    """A validated order names its skus: many can share a transaction that locks them first.
    Other facts find their skus in the database, so each gets a transaction of its own."""
    if record.event_type != "order.validated":
        return None
    try:
        lines = orjson.loads(record.value)["order"]["lines"]
        return sorted({str(line["sku"]) for line in lines})
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None  # parsed (and dead-lettered) by the handler, on its own


def subscriptions(runtime: Runtime) -> list[Subscription]:
    rules = rules_from(runtime.settings.max_shipments, runtime.settings.cost_per_km)
    lifecycle = runtime.topic(topics.ORDERS_LIFECYCLE)

    async def on_location_updated(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await update_location(PgStockLedger(conn), parse(LOCATION, record), rules, lifecycle)

    async def on_stock_adjusted(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await adjust_stock(PgStockLedger(conn), parse(ADJUSTMENT, record), rules, lifecycle)

    async def on_order_fact(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        """One subscription for every fact allocation needs, so an order's facts keep their order."""
        fact = parse(FACT, record)
        ledger = PgOrderReservations(conn)
        match fact:
            case OrderValidated():
                return await allocate_order(ledger, fact.order_id, fact.order, rules, lifecycle)
            case OrderCancelRequested():
                return await request_cancel(ledger, fact, lifecycle)
            case OrderCancelAccepted():
                return await release_cancelled(ledger, fact, rules, lifecycle)
            case ShipmentShipped():
                return await ship_shipment(ledger, fact)
            case ShipmentFailed():
                return await fail_shipment(ledger, fact, rules, lifecycle)
        return []

    return [
        Subscription("location_updated", (topics.INVENTORY_LOCATIONS,), on_location_updated),
        # Both lock stock: small transactions in lanes, each taking its skus' locks in sku order
        # first, so allocation processes never deadlock on each other's batches and scale out.
        Subscription(
            "stock_adjusted",
            (topics.INVENTORY_ADJUSTMENTS,),
            on_stock_adjusted,
            transaction_per_record=True,
        ),
        Subscription(
            "order_fact",
            (topics.ORDERS_LIFECYCLE,),
            on_order_fact,
            ORDER_FACTS,
            transaction_per_record=True,
            lock_keys=skus_to_lock,
        ),
    ]
