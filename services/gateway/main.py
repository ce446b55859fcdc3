"""The HTTP intake gateway (`baton run gateway`): a stateless process that only produces to Kafka.

It keeps no database and joins no consumer group: every process follows the channel keys on the
compacted `notification.api-keys.v1` on its own and answers each request on its own, so it scales
like a web server (more replicas behind a Service, on CPU). Start-up waits out a broker that is not
up yet, and ends with one line when Kafka refuses our credentials. SIGTERM stops taking requests,
lets those in flight finish (their records acknowledged) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from libs.contracts.topology import GATEWAY
from libs.platform import metrics
from libs.platform.heap import settle_heap
from libs.platform.kafka import KafkaAccessRefused, check_access, ensure_topics
from libs.platform.logs import configure_logging
from libs.platform.messaging import TRANSIENT_ERRORS
from libs.platform.service import EdgeDefinition
from services.gateway.adapters.kafka import KafkaKeyDirectory, KafkaOrderCommands
from services.gateway.entry import build_api
from services.gateway.settings import GatewaySettings

log = logging.getLogger("baton.gateway")

WAITED_FOR: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, TimeoutError)
"""What start-up waits out: a broker that is not up yet, or topics not created yet."""

READY_WITHIN_S = 15.0
"""The key follower must have answered a fetch this recently for the process to be ready."""


async def serve(settings: GatewaySettings, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until ``stop`` is set (or SIGTERM/SIGINT arrive)."""
    sasl = settings.kafka_security.sasl_password
    configure_logging(
        "gateway", settings.log_level, settings.log_json, secrets=[sasl.get_secret_value() if sasl else None]
    )
    stopping = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    commands = KafkaOrderCommands(
        settings.kafka, prefix=settings.topic_prefix, timeout_s=settings.gateway_send_timeout_s
    )
    keys = KafkaKeyDirectory(settings.kafka, settings.topic(GATEWAY.follows[0]))

    def ready() -> bool:
        return commands.started and keys.healthy(READY_WITHIN_S)

    ops = await _start_ops(settings.ops_port, ready)
    runner: web.AppRunner | None = None
    try:
        await _connect(settings, commands, keys)
        api = build_api(
            commands,
            keys,
            max_body_bytes=settings.gateway_max_body_bytes,
            rate_per_s=settings.gateway_rate_per_s,
            burst=settings.gateway_burst,
            ready=ready,
        )
        runner = web.AppRunner(api, access_log=None, shutdown_timeout=settings.graceful_timeout_s)
        await runner.setup()
        await web.TCPSite(runner, settings.gateway_host, settings.gateway_port).start()
        settle_heap()
        log.info(
            "gateway listening",
            extra={"host": settings.gateway_host, "port": _bound_port(runner, settings.gateway_port)},
        )
        await stopping.wait()
        log.info("gateway stopping", extra={"instance": settings.instance_id})
    finally:
        if runner is not None:
            await runner.cleanup()  # no new requests; those in flight finish first
        await commands.stop()
        await keys.stop()
        await ops.cleanup()
        log.info("gateway stopped", extra={"instance": settings.instance_id})


async def _connect(settings: GatewaySettings, commands: KafkaOrderCommands, keys: KafkaKeyDirectory) -> None:
    delay = 0.5
    while True:
        try:
            await check_access(settings.kafka)
            await ensure_topics(settings, [*GATEWAY.writes, *GATEWAY.follows])
            await keys.start()
            await commands.start()
            return
        except KafkaAccessRefused as refused:
            log.critical(str(refused))
            raise
        except WAITED_FOR as exc:
            log.warning("start-up waiting for Kafka", extra={"error": repr(exc)})
            await keys.stop()
            await commands.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _start_ops(port: int, ready: Callable[[], bool]) -> web.AppRunner:
    """/livez, /readyz and /metrics on ``BATON_OPS_PORT``, like every Baton process."""

    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"status": "live", "service": "gateway"})

    async def readyz(_: web.Request) -> web.Response:
        ok = bool(ready())
        metrics.READY.labels("gateway").set(1 if ok else 0)
        return web.json_response({"status": "ready" if ok else "not ready"}, status=200 if ok else 503)

    async def metrics_page(_: web.Request) -> web.Response:
        metrics.READY.labels("gateway").set(1 if ready() else 0)  # fresh at every scrape
        return web.Response(
            body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.add_routes([web.get("/livez", livez), web.get("/readyz", readyz), web.get("/metrics", metrics_page)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if sockets := getattr(server, "sockets", None):
            return int(sockets[0].getsockname()[1])
    return configured


DEFINITION = EdgeDefinition(topology=GATEWAY, settings=GatewaySettings, serve=serve)
