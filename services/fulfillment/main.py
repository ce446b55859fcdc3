"""Fulfillment (skeleton): records the shipments of allocated orders.

Pipelines, stages and stage events are the lifecycle part 2 issue; the wiring here is the real one
(consumer group, inbox, outbox relay, dead letters), so that work adds use cases, not plumbing.
"""

from __future__ import annotations

import logging

import asyncpg
from faststream import FastStream
from pydantic import TypeAdapter

from libs.contracts import topics
from libs.contracts.lifecycle import OrderAllocated
from libs.platform.messaging import Incoming, Outgoing, parse
from libs.platform.service import Runtime, ServiceDefinition, Subscription, build_service_app
from libs.platform.settings import BatonSettings

log = logging.getLogger("baton.fulfillment")
ALLOCATED = TypeAdapter(OrderAllocated)


def subscriptions(runtime: Runtime) -> list[Subscription]:
    async def on_order_allocated(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        allocated = parse(ALLOCATED, record)
        for shipment in allocated.shipments:
            await conn.execute(
                "INSERT INTO shipments_seen (shipment_id, order_id, location_id) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                shipment.shipment_id,
                allocated.order_id,
                shipment.location_id,
            )
        log.info(
            "shipments recorded",
            extra={"order_id": str(allocated.order_id), "count": len(allocated.shipments)},
        )
        return []

    return [
        Subscription(
            "order_allocated", (topics.ORDERS_LIFECYCLE,), on_order_allocated, frozenset({"order.allocated"})
        )
    ]


DEFINITION = ServiceDefinition("fulfillment", "services.fulfillment.adapters.migrations", subscriptions)


def build_app(settings: BatonSettings) -> FastStream:
    return build_service_app(DEFINITION, settings)
