"""Allocation's inputs: locations, stock adjustments, and validated orders."""

from __future__ import annotations

import asyncpg
from pydantic import TypeAdapter

from libs.contracts import topics
from libs.contracts.inventory import LocationUpdated, StockAdjusted
from libs.contracts.lifecycle import OrderValidated
from libs.platform.messaging import Incoming, Outgoing, parse
from libs.platform.service import Runtime, Subscription
from services.allocation.adapters.ledger import PgStockLedger
from services.allocation.app.use_cases import adjust_stock, allocate_order, rules_from, update_location

LOCATION = TypeAdapter(LocationUpdated)
ADJUSTMENT = TypeAdapter(StockAdjusted)
VALIDATED = TypeAdapter(OrderValidated)


def subscriptions(runtime: Runtime) -> list[Subscription]:
    rules = rules_from(runtime.settings.max_shipments, runtime.settings.cost_per_km)
    lifecycle = runtime.topic(topics.ORDERS_LIFECYCLE)

    async def on_location_updated(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await update_location(PgStockLedger(conn), parse(LOCATION, record))

    async def on_stock_adjusted(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await adjust_stock(PgStockLedger(conn), parse(ADJUSTMENT, record), rules, lifecycle)

    async def on_order_validated(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        validated = parse(VALIDATED, record)
        return await allocate_order(
            PgStockLedger(conn), validated.order_id, validated.order, rules, lifecycle
        )

    return [
        Subscription("location_updated", (topics.INVENTORY_LOCATIONS,), on_location_updated),
        Subscription("stock_adjusted", (topics.INVENTORY_ADJUSTMENTS,), on_stock_adjusted),
        Subscription(
            "order_validated", (topics.ORDERS_LIFECYCLE,), on_order_validated, frozenset({"order.validated"})
        ),
    ]
