"""Notification's router: webhook subscriptions, redelivery requests and erasure requests one at a
time; customer contacts, status events and stage events set-based."""

from __future__ import annotations

import asyncpg

from libs.contracts.fulfillment import StageChanged
from libs.contracts.lifecycle import OrderReceived
from libs.contracts.notification import RedeliveryRequested, WebhookSubscriptionChanged
from libs.contracts.orders import OrderStatusChanged
from libs.contracts.privacy import ErasureRequested
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.routing import ServiceRouter
from services.notification.adapters.store import PgNotificationUnit, SubscriptionCache
from services.notification.app.ports import NotificationUnit
from services.notification.app.use_cases import (
    change_subscription,
    erase_customer,
    record_stage_changes,
    record_status_changes,
    redeliver,
    remember_customers,
)
from services.notification.settings import NotificationSettings


def build_router(settings: NotificationSettings) -> ServiceRouter[NotificationUnit]:
    """The subscription cache lives as long as the router: every transaction's unit shares it."""
    subscriptions = SubscriptionCache()

    def unit(conn: asyncpg.Connection) -> NotificationUnit:
        return PgNotificationUnit(conn, subscriptions)

    router: ServiceRouter[NotificationUnit] = ServiceRouter(SERVICE_TOPOLOGY["notification"], unit)
    router.on(WebhookSubscriptionChanged)(change_subscription)
    router.on(RedeliveryRequested)(redeliver)
    router.on_batch(OrderReceived)(remember_customers)
    router.on_batch(OrderStatusChanged)(record_status_changes)
    router.on_batch(StageChanged)(record_stage_changes)
    router.on(ErasureRequested)(erase_customer)
    return router
