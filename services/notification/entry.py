"""Notification's router: webhook subscriptions, redelivery requests, status API keys and erasure
requests one at a time; customer contacts, status events and stage events set-based."""

from __future__ import annotations

import asyncpg

from libs.contracts.envelope import Event
from libs.contracts.fulfillment import StageChanged
from libs.contracts.lifecycle import OrderReceived
from libs.contracts.notification import ApiKeyChanged, RedeliveryRequested, WebhookSubscriptionChanged
from libs.contracts.orders import OrderStatusChanged
from libs.contracts.privacy import ErasureRequested
from libs.contracts.returns import ReturnStatusChanged
from libs.contracts.sla import SlaBreached
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.routing import ServiceRouter
from services.notification.adapters.egress import SystemResolver
from services.notification.adapters.store import PgNotificationUnit, SubscriptionCache
from services.notification.app.egress import EgressGuard
from services.notification.app.ports import NotificationUnit, SecretBox
from services.notification.app.use_cases import (
    change_api_key,
    change_subscription,
    erase_customer,
    record_return_changes,
    record_sla_breaches,
    record_stage_changes,
    record_status_changes,
    redeliver,
    remember_customers,
)
from services.notification.settings import NotificationSettings


class NoKey:
    """The secret box of a notification given no ``BATON_WEBHOOK_SECRETS_KEY``: it opens nothing
    (such a process does not start its workers; see ``main.py``)."""

    def seal(self, secret: str) -> str:
        raise RuntimeError("BATON_WEBHOOK_SECRETS_KEY is not set")

    def open(self, sealed: str) -> str | None:
        return None


def build_router(settings: NotificationSettings) -> ServiceRouter[NotificationUnit]:
    """The subscription cache lives as long as the router: every transaction's unit shares it.
    Subscriptions are checked by the egress guard the dispatcher uses, with the same settings."""
    subscriptions = SubscriptionCache()
    guard = EgressGuard(settings.egress_policy(), SystemResolver(settings.webhook_timeout_s))
    box: SecretBox = settings.secret_box() or NoKey()

    def unit(conn: asyncpg.Connection) -> NotificationUnit:
        return PgNotificationUnit(conn, subscriptions)

    async def subscription_changed(command: WebhookSubscriptionChanged, uow: NotificationUnit) -> list[Event]:
        return await change_subscription(command, uow, guard, box)

    router: ServiceRouter[NotificationUnit] = ServiceRouter(SERVICE_TOPOLOGY["notification"], unit)
    router.on(WebhookSubscriptionChanged)(subscription_changed)
    router.on(RedeliveryRequested)(redeliver)
    router.on(ApiKeyChanged)(change_api_key)
    router.on_batch(OrderReceived)(remember_customers)
    router.on_batch(OrderStatusChanged)(record_status_changes)
    router.on_batch(StageChanged)(record_stage_changes)
    router.on_batch(ReturnStatusChanged)(record_return_changes)
    router.on_batch(SlaBreached)(record_sla_breaches)
    router.on(ErasureRequested)(erase_customer)
    return router
