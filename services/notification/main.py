"""Notification: signed webhooks with retries, customer e-mails, and the order status API."""

from __future__ import annotations

import logging

from aiohttp import web
from faststream import FastStream

from libs.platform.service import Runtime, ServiceDefinition, Stopper, build_service_app
from libs.platform.settings import BatonSettings
from services.notification.adapters.http_api import build_api
from services.notification.app.dispatch import Dispatcher
from services.notification.entry import subscriptions

log = logging.getLogger("baton.notification")


async def start_workers(runtime: Runtime) -> Stopper:
    """The webhook and e-mail dispatcher, and the status API."""
    dispatcher = Dispatcher(runtime.pool, runtime.settings, runtime.committed)
    dispatcher.start()
    runtime.after_commit.append(dispatcher.wake)
    runner = web.AppRunner(build_api(runtime.pool), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, runtime.settings.http_host, runtime.settings.http_port).start()
    log.info("status API listening", extra={"port": runtime.settings.http_port})

    async def stop() -> None:
        await runner.cleanup()
        await dispatcher.stop()

    return stop


DEFINITION = ServiceDefinition(
    name="notification",
    migrations="services.notification.adapters.migrations",
    subscriptions=subscriptions,
    on_started=start_workers,
)


def build_app(settings: BatonSettings) -> FastStream:
    return build_service_app(DEFINITION, settings)
