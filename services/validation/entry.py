"""Validation's inputs: catalog updates, received orders, and support's hold decisions."""

from __future__ import annotations

import asyncpg
from pydantic import TypeAdapter

from libs.contracts import topics
from libs.contracts.catalog import ProductUpdated
from libs.contracts.lifecycle import OrderReceived
from libs.contracts.orders import HoldDecision
from libs.platform.messaging import Incoming, Outgoing, parse
from libs.platform.service import Runtime, Subscription
from services.validation.adapters.store import PgValidationStore
from services.validation.app.use_cases import decide_hold, policy_from, update_product, validate_order

PRODUCT = TypeAdapter(ProductUpdated)
RECEIVED = TypeAdapter(OrderReceived)
DECISION = TypeAdapter(HoldDecision)


def subscriptions(runtime: Runtime) -> list[Subscription]:
    settings = runtime.settings
    policy = policy_from(settings.supported_countries, settings.hold_threshold)
    lifecycle = runtime.topic(topics.ORDERS_LIFECYCLE)

    async def on_product_updated(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await update_product(PgValidationStore(conn), parse(PRODUCT, record))

    async def on_order_received(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        received = parse(RECEIVED, record)
        return await validate_order(
            PgValidationStore(conn), received.order_id, received.order, policy, lifecycle
        )

    async def on_hold_decision(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await decide_hold(PgValidationStore(conn), parse(DECISION, record), lifecycle)

    return [
        Subscription("product_updated", (topics.CATALOG_PRODUCTS,), on_product_updated),
        Subscription(
            "order_received", (topics.ORDERS_LIFECYCLE,), on_order_received, frozenset({"order.received"})
        ),
        Subscription("hold_decision", (topics.ORDERS_HOLD_DECISIONS,), on_hold_decision),
    ]
