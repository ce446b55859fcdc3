"""Notification: signed webhooks with retries, customer e-mails, and the order status API."""

from __future__ import annotations

import logging

from aiohttp import web

from libs.contracts.topics import dead_letter_topic
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.db import session_settings
from libs.platform.dead_letters import read_dead_letters
from libs.platform.secret_box import KEY_SETTING
from libs.platform.service import Runtime, ServiceDefinition, StartupRefused, Stopper
from libs.platform.startup import when_reachable
from services.notification.adapters.board_store import ChangeFeed, PgBoardQueries, PgOperatorActions
from services.notification.adapters.board_web import Board, load_pipelines, static_dir
from services.notification.adapters.egress import SystemResolver
from services.notification.adapters.http_api import build_api
from services.notification.adapters.smtp import AioSmtpSender
from services.notification.adapters.store import (
    PgDeliveryQueue,
    PgEmailQueue,
    PgOrderStatusQueries,
    PgSubscriptionSecrets,
)
from services.notification.adapters.templates import PackageTemplates
from services.notification.adapters.webhooks import AiohttpWebhookSender
from services.notification.app.delivery import DeliveryWorker, EmailPolicy, WebhookPolicy, webhook_lease_s
from services.notification.app.egress import EgressGuard
from services.notification.entry import build_router
from services.notification.settings import NotificationSettings

log = logging.getLogger("baton.notification")


async def start_workers(runtime: Runtime) -> Stopper:
    """The delivery worker (webhooks and e-mails) and the status API, once every stored signing
    secret is sealed under the current key (notification does not run without one)."""
    settings: NotificationSettings = runtime.settings
    box = settings.secret_box()
    if box is None:
        raise StartupRefused(
            f"{KEY_SETTING} is not set: notification keeps webhook signing secrets sealed with it "
            "(the key `baton webhooks add` seals with; `baton webhooks new-key` makes one)"
        )
    secrets = PgSubscriptionSecrets(runtime.pool)
    sealed, resealed = await when_reachable(
        lambda: secrets.seal_all(box.seal, box.reseal), "sealing webhook secrets"
    )
    if sealed or resealed:
        log.info("webhook secrets sealed", extra={"sealed_from_clear": sealed, "resealed": resealed})
    guard = EgressGuard(settings.egress_policy(), SystemResolver(settings.webhook_timeout_s))
    sender = AiohttpWebhookSender(settings.webhook_timeout_s, guard)
    await sender.open()
    worker = DeliveryWorker(
        deliveries=PgDeliveryQueue(runtime.pool),
        webhooks=sender,
        secrets=box,
        webhook_policy=WebhookPolicy(
            slots_per_subscription=settings.webhook_concurrency_per_subscription,
            max_attempts=settings.webhook_max_attempts,
            backoff_base_s=settings.webhook_backoff_base_s,
            backoff_cap_s=settings.webhook_backoff_cap_s,
            dead_letters=settings.topic(dead_letter_topic("notification")),
            lease_s=webhook_lease_s(settings.webhook_timeout_s),
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
    if not (static_dir() / "vendor" / "htmx.min.js").exists():
        log.warning(
            "the board's htmx is missing (`make install` copies it from npm): the board will not update live"
        )
    url = settings.database_url.get_secret_value()
    feed = ChangeFeed(url, session_settings(url, "notification", "board-notification"))
    feed.start()
    orders = PgOrderStatusQueries(runtime.pool)
    board = Board(
        pipelines=load_pipelines(settings.pipelines_file),
        queries=PgBoardQueries(runtime.pool),
        orders=orders,
        actions=PgOperatorActions(runtime.pool, settings.topic, runtime.committed),
        feed=feed,
        dead_letters=lambda: read_dead_letters(settings),
    )
    api = build_api(orders, settings.api_rate_per_s, settings.api_burst, board=board)
    runner = web.AppRunner(api, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    log.info(
        "status API and board listening",
        extra={"host": settings.http_host, "port": settings.http_port, "board": "/board"},
    )

    async def stop() -> None:
        await runner.cleanup()
        await feed.stop()
        await worker.stop(timeout_s=settings.webhook_timeout_s + 2)
        await sender.close()

    return stop


DEFINITION = ServiceDefinition(
    topology=SERVICE_TOPOLOGY["notification"],
    migrations="services.notification.adapters.migrations",
    settings=NotificationSettings,
    router=build_router,
    workers=start_workers,
)
