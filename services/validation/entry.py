"""Validation's inputs: catalog updates, received orders, and support's hold decisions."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg
from pydantic import TypeAdapter

from libs.contracts import topics
from libs.contracts.catalog import ProductUpdated
from libs.contracts.lifecycle import OrderReceived
from libs.contracts.orders import HoldDecision, OrderDetails
from libs.platform.messaging import Incoming, Outgoing, Rejected, one_at_a_time, parse
from libs.platform.service import Runtime, Subscription
from services.validation.adapters.store import PgValidationStore
from services.validation.app.use_cases import decide_hold, policy_from, update_product, validate_orders

PRODUCT = TypeAdapter(ProductUpdated)
RECEIVED = TypeAdapter(OrderReceived)
DECISION = TypeAdapter(HoldDecision)


def subscriptions(runtime: Runtime) -> list[Subscription]:
    settings = runtime.settings
    policy = policy_from(settings.supported_countries, settings.hold_threshold)
    lifecycle = runtime.topic(topics.ORDERS_LIFECYCLE)

    async def on_product_updated(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await update_product(PgValidationStore(conn), parse(PRODUCT, record))

    async def on_orders_received(
        conn: asyncpg.Connection, records: Sequence[Incoming]
    ) -> list[list[Outgoing] | Rejected]:
        received: list[tuple[UUID, OrderDetails] | Rejected] = []
        for record in records:
            try:
                fact = parse(RECEIVED, record)
                received.append((fact.order_id, fact.order))
            except Rejected as rejected:
                received.append(rejected)
        return await validate_orders(PgValidationStore(conn), received, policy, lifecycle)

    async def on_hold_decision(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await decide_hold(PgValidationStore(conn), parse(DECISION, record), lifecycle)

    return [
        Subscription("product_updated", (topics.CATALOG_PRODUCTS,), on_product_updated),
        Subscription(
            "order_received",
            (topics.ORDERS_LIFECYCLE,),
            one_at_a_time(on_orders_received),
            frozenset({"order.received"}),
            batch_handler=on_orders_received,
        ),
        Subscription("hold_decision", (topics.ORDERS_HOLD_DECISIONS,), on_hold_decision),
    ]
