"""Notification (skeleton): follows the public status topic.

Webhooks and customer e-mails are the lifecycle part 2 issue; the wiring here is the real one.
"""

from __future__ import annotations

import asyncpg
from faststream import FastStream
from pydantic import TypeAdapter

from libs.contracts import topics
from libs.contracts.orders import OrderStatusChanged
from libs.platform.messaging import Incoming, Outgoing, parse
from libs.platform.service import Runtime, ServiceDefinition, Subscription, build_service_app
from libs.platform.settings import BatonSettings

STATUS = TypeAdapter(OrderStatusChanged)


def subscriptions(runtime: Runtime) -> list[Subscription]:
    async def on_status_changed(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        status = parse(STATUS, record)
        await conn.execute(
            "INSERT INTO statuses_seen (order_id, version, status) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            status.order_id,
            status.version,
            status.status.value,
        )
        return []

    return [Subscription("status_changed", (topics.ORDERS_STATUS,), on_status_changed)]


DEFINITION = ServiceDefinition("notification", "services.notification.adapters.migrations", subscriptions)


def build_app(settings: BatonSettings) -> FastStream:
    return build_service_app(DEFINITION, settings)
