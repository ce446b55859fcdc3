"""Notification's inputs: public statuses and stage events, order details, webhook commands."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from pydantic import TypeAdapter

from libs.contracts import topics
from libs.contracts.fulfillment import StageChanged
from libs.contracts.lifecycle import OrderReceived
from libs.contracts.notification import RedeliveryRequested, WebhookSubscriptionChanged
from libs.contracts.orders import OrderStatusChanged
from libs.platform.messaging import Incoming, Outgoing, Rejected, one_at_a_time, parse
from libs.platform.service import Runtime, Subscription
from services.notification.app import intake

STATUS = TypeAdapter(OrderStatusChanged)
STAGE = TypeAdapter(StageChanged)
RECEIVED = TypeAdapter(OrderReceived)
SUBSCRIPTION = TypeAdapter(WebhookSubscriptionChanged)
REDELIVERY = TypeAdapter(RedeliveryRequested)


def subscriptions(runtime: Runtime) -> list[Subscription]:
    webhook_subscriptions = intake.SubscriptionCache()
    runtime.after_commit.append(webhook_subscriptions.after_commit)

    async def on_statuses_changed(
        conn: asyncpg.Connection, records: Sequence[Incoming]
    ) -> list[list[Outgoing] | Rejected]:
        """Four or five status events per order: applied set-based, a few statements per batch."""
        items: list[tuple[OrderStatusChanged, bytes] | Rejected] = []
        for record in records:
            try:
                items.append((parse(STATUS, record), record.value))
            except Rejected as rejected:
                items.append(rejected)
        return await intake.on_statuses(conn, webhook_subscriptions, items)

    async def on_stage_changed(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await intake.on_stage(conn, webhook_subscriptions, parse(STAGE, record), record.value)

    async def on_order_received(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await intake.on_received(conn, parse(RECEIVED, record))

    async def on_subscription_changed(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        webhook_subscriptions.invalidate()
        return await intake.change_subscription(conn, parse(SUBSCRIPTION, record))

    async def on_redelivery_requested(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await intake.redeliver(conn, parse(REDELIVERY, record))

    return [
        Subscription("subscription_changed", (topics.NOTIFICATION_SUBSCRIPTIONS,), on_subscription_changed),
        Subscription("redelivery_requested", (topics.NOTIFICATION_REDELIVERIES,), on_redelivery_requested),
        Subscription(
            "order_received", (topics.ORDERS_LIFECYCLE,), on_order_received, frozenset({"order.received"})
        ),
        Subscription(
            "status_changed",
            (topics.ORDERS_STATUS,),
            one_at_a_time(on_statuses_changed),
            batch_handler=on_statuses_changed,
        ),
        Subscription("stage_changed", (topics.FULFILLMENT_STAGE_CHANGES,), on_stage_changed),
    ]
