"""The operations endpoints every service serves on ``BATON_OPS_PORT``: /metrics, /livez, /readyz.

``/livez`` answers while the process's event loop runs (restart me only if this fails).
``/readyz`` answers 200 only when the service can reach both Kafka (every input's consumer fetched
within the last seconds) and PostgreSQL right now, so a rollout waits for a pod that can actually
work and traffic-based checks drop one that cannot.
``/metrics`` refreshes the gauges that need a query (readiness, outbox backlog, consumer lag) at
scrape time, so ``baton_ready`` is current even where nothing probes ``/readyz`` (Compose, a laptop)
and the readiness alert sees a process that is not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from libs.platform import metrics
from libs.platform.kafka import AUTHORIZATION_ERRORS
from libs.platform.lag import LagProbe

if TYPE_CHECKING:
    from libs.platform.service import Runtime

log = logging.getLogger("baton.ops")

CHECK_TIMEOUT_S = 2.0
LAG_REFRESH_S = 5.0


class OpsServer:
    def __init__(self, runtime: Runtime, port: int) -> None:
        self._runtime = runtime
        self._port = port
        self._runner: web.AppRunner | None = None
        self._lag = LagProbe(runtime.settings.kafka)
        self._lag_read_at = 0.0
        self.port = port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "0.0.0.0", self._port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)  # the bound port is exposed only here
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("ops endpoints listening", extra={"port": self.port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self._lag.stop()

    async def _livez(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "live", "service": self._runtime.service})

    async def ready(self) -> dict[str, bool]:
        database = kafka = False
        pool = self._runtime._pool
        if pool is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    database = await pool.fetchval("SELECT 1") == 1
        kafka = self._runtime.kafka_ready()
        return {"kafka": kafka, "database": database}

    async def _checked(self) -> dict[str, bool]:
        """The readiness checks, recorded in ``baton_ready``."""
        checks = await self.ready()
        metrics.READY.labels(self._runtime.service).set(1 if all(checks.values()) else 0)
        return checks

    async def _readyz(self, _: web.Request) -> web.Response:
        checks = await self._checked()
        ok = all(checks.values())
        body: dict[str, object] = {"status": "ready" if ok else "not ready", "checks": checks}
        if stale := self._runtime.stale_inputs():
            body["stale_inputs"] = stale
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        await self._refresh()
        return web.Response(
            body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _refresh(self) -> None:
        await self._checked()
        service = self._runtime.service
        pool = self._runtime._pool
        if pool is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    row = await pool.fetchrow(
                        "SELECT count(*) AS pending, "
                        "coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest "
                        "FROM outbox"
                    )
                if row is not None:
                    metrics.OUTBOX_PENDING.labels(service).set(row["pending"])
                    metrics.OUTBOX_OLDEST.labels(service).set(row["oldest"])
        if time.monotonic() - self._lag_read_at < LAG_REFRESH_S or not self._runtime.groups:
            return
        self._lag_read_at = time.monotonic()
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S * 2):
                rows = await self._lag.read(self._runtime.groups)
        except Exception as exc:  # the broker may be away; metrics must still answer
            denied = isinstance(exc, AUTHORIZATION_ERRORS)  # a missing grant, not an outage: say so
            (log.warning if denied else log.debug)("consumer lag not readable", extra={"error": repr(exc)})
            await self._lag.stop()
            return
        for row in rows:
            metrics.CONSUMER_LAG.labels(service, row.group, row.topic).set(row.lag)
