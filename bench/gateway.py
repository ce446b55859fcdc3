"""The HTTP gateway's load figure for `make bench`: requests/s, then latency at half that rate.

One `baton run gateway` process on the benchmark's broker (fresh topics), a key published on the key
topic as the operator's CLI would, and an async client (aiohttp) on the same machine:

1. Closed loop: ``concurrency`` clients post valid orders back to back for ``duration_s``; the
   figure is accepted (202) requests per second, each acknowledged by the broker (acks=all).
2. Open loop: orders at half that rate on a fixed schedule; latency from each request's *scheduled*
   time (free of coordinated omission) to its answer: p50/p95/p99/max.

The gateway's rate limit is lifted for the run (one key would otherwise be the bottleneck).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from libs.api_keys import digest, new_key
from libs.contracts import topics
from libs.contracts.notification import ApiKeyChanged
from libs.platform.supervisor import Supervisor
from libs.simulators.world import demo_shop, random_order
from tests.support.infra import Infra, free_port, fresh_environment

CHANNEL = "webshop"


async def gateway_bench(
    infra: Infra, duration_s: float, open_s: float, log_dir: Path, concurrency: int = 32
) -> dict[str, Any]:
    environment = await fresh_environment(infra, "bench-gw")
    port = free_port()
    env = environment.service_env() | {
        "BATON_GATEWAY_PORT": str(port),
        "BATON_GATEWAY_RATE_PER_S": "1000000",
        "BATON_GATEWAY_BURST": "1000000",
        "BATON_LOG_LEVEL": "WARNING",
    }
    fleet = Supervisor(env, log_dir)
    url = f"http://127.0.0.1:{port}"
    key = new_key()
    producer = infra.kafka.producer(enable_idempotence=True, acks="all")
    try:
        fleet.start("gateway", "gateway")
        await producer.start()
        command = ApiKeyChanged(
            action="add", key_id=f"key_{secrets.token_hex(6)}", key_hash=digest(key), channels=[CHANNEL]
        )
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency * 2), headers={"Authorization": f"Bearer {key}"}
        ) as http:
            await _until_known(
                http, url, producer, environment.settings.topic(topics.NOTIFICATION_API_KEYS), command, fleet
            )
            shop = demo_shop(skus=50, sku_prefix="G")
            rng = random.Random(7)
            counter = iter(range(10**9))

            def next_order() -> bytes:
                return orjson.dumps(random_order(rng, shop, f"g{next(counter)}", invalid_share=0.0))

            closed = await _closed(http, url, next_order, duration_s, concurrency)
            rate = max(1.0, closed["requests_per_s"] / 2)
            opened = await _open(http, url, next_order, rate, open_s)
        return {"closed_loop": closed, "open_loop": opened, "concurrency": concurrency}
    finally:
        await producer.stop()
        fleet.stop()
        await environment.drop()


async def _until_known(
    http: aiohttp.ClientSession,
    url: str,
    producer: Any,
    topic: str,
    command: ApiKeyChanged,
    fleet: Supervisor,
) -> None:
    deadline = time.monotonic() + 120
    sent = False
    while time.monotonic() < deadline:
        assert not fleet.exited(), f"the gateway exited: {fleet.exited()}"
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url + "/readyz") as ready:
                if ready.status == 200 and not sent:
                    await producer.send_and_wait(
                        topic, command.model_dump_json().encode(), key=command.key_id.encode()
                    )
                    sent = True
            if sent:
                async with http.post(url + "/v1/orders", data=b"{}") as probe:
                    if probe.status == 422:  # the key is known; the empty body is refused
                        return
        await asyncio.sleep(0.3)
    raise TimeoutError("the gateway never accepted the bench key")


async def _post(http: aiohttp.ClientSession, url: str, body: bytes) -> int:
    async with http.post(
        url + "/v1/orders", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        await response.read()
        return response.status


async def _closed(
    http: aiohttp.ClientSession, url: str, next_order: Any, duration_s: float, concurrency: int
) -> dict[str, Any]:
    accepted = other = 0
    end = time.monotonic() + duration_s

    async def client() -> None:
        nonlocal accepted, other
        while time.monotonic() < end:
            if await _post(http, url, next_order()) == 202:
                accepted += 1
            else:
                other += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {"requests_per_s": round(accepted / elapsed, 1), "accepted": accepted, "not_accepted": other}


async def _open(
    http: aiohttp.ClientSession, url: str, next_order: Any, rate: float, duration_s: float
) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    start = time.monotonic() + 0.2
    count = int(rate * duration_s)

    async def one(at: float) -> None:
        nonlocal failures
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        status = await _post(http, url, next_order())
        if status == 202:
            latencies.append(time.monotonic() - at)
        else:
            failures += 1

    await asyncio.gather(*(one(start + i / rate) for i in range(count)))
    latencies.sort()

    def pct(p: float) -> float:
        return (
            round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else 0.0
        )

    return {
        "rate_per_s": round(rate, 1),
        "requests": count,
        "not_accepted": failures,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(1000 * latencies[-1], 1) if latencies else 0.0,
    }
