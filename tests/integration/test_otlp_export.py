"""With OTEL_EXPORTER_OTLP_ENDPOINT set, a service exports its spans by OTLP/HTTP to that endpoint."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.infra import PROBE, Infra, free_port, fresh_environment
from tests.support.kafka_io import Publisher
from tests.support.probe_service import PROBE_TOPIC

pytestmark = pytest.mark.integration


async def test_spans_reach_an_otlp_collector(infra: Infra) -> None:
    received: list[ExportTraceServiceRequest] = []

    async def collect(request: web.Request) -> web.Response:
        body = ExportTraceServiceRequest()
        body.ParseFromString(await request.read())
        received.append(body)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    environment = await fresh_environment(infra, schemas=PROBE)
    prefix = environment.prefix
    env = environment.env_for("probe") | {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    publisher = Publisher(infra.kafka, prefix)
    await publisher.start()
    process = subprocess.Popen([sys.executable, "-m", "tests.support.probe_service"], env=env)
    try:
        await publisher.send(PROBE_TOPIC, "k", b"traced")
        deadline = time.monotonic() + 60
        names: set[tuple[str, str]] = set()
        while time.monotonic() < deadline and not any("process" in n for _, n in names):
            await asyncio.sleep(0.2)
            names = {
                (
                    next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name"),
                    span.name,
                )
                for body in received
                for rs in body.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            }
        assert ("baton-probe", f"process {prefix}{PROBE_TOPIC}") in names, names
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
        await publisher.stop()
        await runner.cleanup()
        await environment.drop()
