"""Notification: signed webhooks with retries, customer e-mails, and the order status API."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg
from aiohttp import web
from faststream import FastStream

from libs.contracts import topics
from libs.contracts.topics import dead_letter_topic
from libs.platform.messaging import BatchHandler, Incoming, Outgoing, Rejected, one_at_a_time
from libs.platform.routing import BoundInput
from libs.platform.service import Runtime, ServiceDefinition, Stopper, Subscription, build_service_app
from libs.platform.settings import BatonSettings
from services.notification.adapters.http_api import build_api
from services.notification.adapters.smtp import AioSmtpSender
from services.notification.adapters.store import PgDeliveryQueue, PgEmailQueue, PgOrderStatusQueries
from services.notification.adapters.templates import PackageTemplates
from services.notification.adapters.webhooks import AiohttpWebhookSender
from services.notification.app.delivery import DeliveryWorker, EmailPolicy, WebhookPolicy
from services.notification.app.ports import NotificationUnit
from services.notification.entry import build_router
from services.notification.settings import NotificationSettings

log = logging.getLogger("baton.notification")


def notification_settings(settings: BatonSettings) -> NotificationSettings:
    """The service's own settings; read from the same environment while the runtime still hands
    every service the platform's class."""
    return settings if isinstance(settings, NotificationSettings) else NotificationSettings()


async def start_workers(runtime: Runtime) -> Stopper:
    """The delivery worker (webhooks and e-mails) and the status API."""
    settings = notification_settings(runtime.settings)
    sender = AiohttpWebhookSender(settings.webhook_timeout_s)
    await sender.open()
    worker = DeliveryWorker(
        deliveries=PgDeliveryQueue(runtime.pool),
        webhooks=sender,
        webhook_policy=WebhookPolicy(
            slots_per_subscription=settings.webhook_concurrency_per_subscription,
            max_attempts=settings.webhook_max_attempts,
            backoff_base_s=settings.webhook_backoff_base_s,
            backoff_cap_s=settings.webhook_backoff_cap_s,
            dead_letters=settings.topic(dead_letter_topic("notification")),
        ),
        emails=PgEmailQueue(runtime.pool),
        templates=PackageTemplates(),
        mail=AioSmtpSender(settings),
        email_policy=EmailPolicy(
            sender=settings.smtp_from,
            round_size=settings.email_round_size,
            max_attempts=settings.email_max_attempts,
        ),
        committed=runtime.committed,
    )
    worker.start()
    runtime.after_commit.append(worker.wake)
    runner = web.AppRunner(build_api(PgOrderStatusQueries(runtime.pool)), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    log.info("status API listening", extra={"host": settings.http_host, "port": settings.http_port})

    async def stop() -> None:
        await runner.cleanup()
        await worker.stop(timeout_s=settings.webhook_timeout_s + 2)
        await sender.close()

    return stop


TODAY = {"order_facts": ("order_received", topics.ORDERS_LIFECYCLE, frozenset({"order.received"}))}
"""Today's name, topic and type filter of the input the topology moves to notification's facts topic."""


def subscriptions(runtime: Runtime) -> list[Subscription]:
    """Until the runtime takes routers (core, part 2): the router's inputs as today's subscriptions."""
    found = []
    for bound in build_router(notification_settings(runtime.settings)).bind():
        name, topic, event_types = TODAY.get(bound.name, (bound.name, bound.spec.topic, None))
        apply = _batch_handler(bound)
        found.append(Subscription(name, (topic,), one_at_a_time(apply), event_types, batch_handler=apply))
    return found


def _batch_handler(bound: BoundInput[NotificationUnit]) -> BatchHandler:
    async def apply(conn: asyncpg.Connection, records: Sequence[Incoming]) -> list[list[Outgoing] | Rejected]:
        return await bound.apply(conn, [bound.parse(r) for r in records])

    return apply


DEFINITION = ServiceDefinition(
    name="notification",
    migrations="services.notification.adapters.migrations",
    subscriptions=subscriptions,
    on_started=start_workers,
)


def build_app(settings: BatonSettings) -> FastStream:
    return build_service_app(DEFINITION, settings)
