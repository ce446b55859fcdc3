"""Readiness means "can work right now": a service that cannot reach PostgreSQL is live but not ready,
and becomes ready by itself once the database is reachable."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from urllib.parse import urlsplit

import aiohttp
import pytest

from libs.platform import dsn
from tests.support.forwarder import TcpForwarder
from tests.support.infra import PROBE, Infra, free_port, fresh_environment

pytestmark = pytest.mark.integration


async def _probe(port: int, path: str) -> tuple[int, dict[str, object]] | None:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(5)) as r,
        ):
            return r.status, json.loads(await r.text())
    except aiohttp.ClientError:
        return None


async def _scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(10)) as r,
    ):
        assert r.status == 200
        return await r.text()


async def _wait_for(port: int, path: str, status: int, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await _probe(port, path)
        if last is not None and last[0] == status:
            return last[1]
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} did not answer {status} within {timeout}s (last: {last})")


async def test_a_service_without_its_database_is_live_but_not_ready_until_the_database_is_back(
    infra: Infra,
) -> None:
    environment = await fresh_environment(infra, schemas=PROBE)
    port, dead_db_port = free_port(), free_port()
    env = environment.env_for("probe") | {"BATON_OPS_PORT": str(port)}
    server = urlsplit(infra.server_dsn)
    target_host, target_port = server.hostname or "127.0.0.1", server.port or 5432
    unreachable = dsn.with_host(env["BATON_DATABASE_URL"], "127.0.0.1", dead_db_port)
    # A TCP forwarder we can switch on: the database "comes back" when it starts forwarding.
    gate = TcpForwarder(dead_db_port, target_host, target_port)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.probe_service"],
        env=env | {"BATON_DATABASE_URL": unreachable},
    )
    try:
        await _wait_for(port, "/livez", 200)
        # A scrape alone (nothing probed /readyz yet) says it is not ready: the readiness alert sees it.
        scraped = await _scrape(port)
        assert 'baton_ready{service="probe"} 0.0' in scraped
        assert "process_resident_memory_bytes" in scraped and "_created" not in scraped
        body = await _wait_for(port, "/readyz", 503)
        assert body["checks"]["database"] is False  # type: ignore[index]

        await gate.open()
        body = await _wait_for(port, "/readyz", 200, timeout=90)
        assert body["checks"] == {"kafka": True, "database": True}
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
        await gate.close()
        await environment.drop()
