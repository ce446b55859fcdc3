"""Fulfillment's inputs: locations, the order lifecycle (allocations, forwarded cancels), stage updates."""

from __future__ import annotations

import asyncpg
from pydantic import TypeAdapter

from libs.contracts import topics
from libs.contracts.fulfillment import FulfillmentUpdate
from libs.contracts.inventory import LocationUpdated
from libs.contracts.lifecycle import LifecycleFact, OrderAllocated, OrderCancelForwarded
from libs.platform.messaging import Incoming, Outgoing, parse
from libs.platform.service import Runtime, Subscription
from services.fulfillment.adapters.store import PgFulfillmentStore
from services.fulfillment.app.use_cases import (
    Topics,
    apply_update,
    decide_cancel,
    load_pipelines,
    receive_allocation,
    update_location,
)

LOCATION = TypeAdapter(LocationUpdated)
UPDATE = TypeAdapter(FulfillmentUpdate)
FACT: TypeAdapter[LifecycleFact] = TypeAdapter(LifecycleFact)


def subscriptions(runtime: Runtime) -> list[Subscription]:
    config = load_pipelines()
    t = Topics(
        lifecycle=runtime.topic(topics.ORDERS_LIFECYCLE),
        stage_changes=runtime.topic(topics.FULFILLMENT_STAGE_CHANGES),
    )

    async def on_location_updated(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await update_location(PgFulfillmentStore(conn), parse(LOCATION, record))

    async def on_order_fact(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        """One subscription for every fact fulfillment needs, so an order's facts keep their order."""
        fact = parse(FACT, record)
        store = PgFulfillmentStore(conn)
        if isinstance(fact, OrderAllocated):
            return await receive_allocation(store, fact, config, t)
        if isinstance(fact, OrderCancelForwarded):
            return await decide_cancel(store, fact, config, t)
        return []

    async def on_fulfillment_update(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await apply_update(PgFulfillmentStore(conn), parse(UPDATE, record), config, t)

    return [
        Subscription("location_updated", (topics.INVENTORY_LOCATIONS,), on_location_updated),
        Subscription(
            "order_fact",
            (topics.ORDERS_LIFECYCLE,),
            on_order_fact,
            frozenset({"order.allocated", "order.cancel-forwarded"}),
        ),
        Subscription("fulfillment_update", (topics.FULFILLMENT_UPDATES,), on_fulfillment_update),
    ]
