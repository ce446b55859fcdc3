"""Notification end to end: signed webhooks with retries and dead letters, e-mails over SMTP, status API."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.e2e.conftest import LiveFleet
from tests.support.infra import free_port
from tests.support.orders import adjustment, location, order, product

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(b"baton-test-secret-0123456789").decode()


class Receiver:
    """A local HTTP endpoint per behaviour: healthy, failing twice, always failing, hanging."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.flaky_failures = 2
        self.dead_recovered = False
        self.release_slow = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        self.received[name].append({"headers": dict(request.headers), "body": body})
        if name == "flaky" and self.flaky_failures > 0:
            self.flaky_failures -= 1
            return web.Response(status=500)
        if name == "dead" and not self.dead_recovered:
            return web.Response(status=500)
        if name == "slow":
            await self.release_slow.wait()
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.post("/{name}", self.handle)])
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release_slow.set()
        if self._runner:
            await self._runner.cleanup()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def events(self, name: str, order_id: str) -> list[str]:
        out = []
        for request in self.received[name]:
            payload = orjson.loads(request["body"])
            if payload["data"].get("order_id") == order_id:
                out.append(payload["type"])
        return out


def signature_is_valid(request: dict[str, Any]) -> bool:
    """Standard Webhooks check, written independently of Baton's signing code."""
    headers = {k.lower(): v for k, v in request["headers"].items()}
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request["body"]
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, headers["webhook-signature"])


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def subscribe(live: LiveFleet, subscription_id: str, url: str, events: str) -> None:
    """Through the `baton webhooks add` command, as an operator would."""
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "libs.cli.main",
            "webhooks",
            "add",
            "--url",
            url,
            "--secret",
            SECRET,
            "--events",
            events,
            "--subscription-id",
            subscription_id,
        ],
        env=live.fleet.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    await live.wait_row(
        "SELECT true FROM notification.subscriptions WHERE subscription_id = $1", subscription_id
    )


async def test_webhooks_are_signed_retried_dead_lettered_redelivered_and_isolated(
    live: LiveFleet, receiver: Receiver
) -> None:
    run = secrets.token_hex(3)
    for name, events in (("ok", "*"), ("flaky", "order.shipped"), ("dead", "order.shipped"), ("slow", "*")):
        await subscribe(live, f"{name}-{run}", receiver.url(name), events)
    item = f"WH-{run}"
    await live.seed(
        products=[product(item)],
        locations=[location(f"wh-{item}")],
        adjustments=[adjustment(f"i-{item}", item, f"wh-{item}", delta=5)],
    )
    external_id = await live.submit(order(lines=[(item, 1, "10.00")]))
    status = await live.wait_status(external_id, "in_fulfillment")
    order_id = status["order_id"]
    await live.move(status["shipments"][0]["shipment_id"], "shipped", carrier="UPS", tracking_number="1Z999")
    await live.wait_status(external_id, "shipped")

    async def until(check: Any, what: str, timeout: float = 60) -> None:
        for _ in range(int(timeout / 0.1)):
            if await check() if asyncio.iscoroutinefunction(check) else check():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    # The healthy subscriber gets every event while the hanging one has not answered a single request.
    wanted = [
        "order.received",
        "order.validated",
        "order.allocated",
        "stage.entered:new",
        "order.in_fulfillment",
        "stage.left:new",
        "stage.entered:shipped",
        "order.shipped",
    ]
    await until(
        lambda: set(wanted) <= set(receiver.events("ok", order_id)), "all events at the healthy endpoint"
    )
    assert not receiver.release_slow.is_set() and receiver.events("slow", order_id)
    assert sorted(receiver.events("ok", order_id)) == sorted(set(receiver.events("ok", order_id))), (
        "no duplicates"
    )
    assert all(signature_is_valid(r) for r in receiver.received["ok"])

    # Failing twice, then delivered on the third attempt, always under the same webhook-id.
    await until(
        lambda: receiver.events("flaky", order_id).count("order.shipped") == 3, "three attempts at flaky"
    )
    flaky_ids = {
        r["headers"]["webhook-id"]
        for r in receiver.received["flaky"]
        if orjson.loads(r["body"])["data"].get("order_id") == order_id
    }
    assert len(flaky_ids) == 1
    delivered = await live.wait_row(
        "SELECT attempts FROM notification.deliveries WHERE subscription_id = $1 AND status = 'delivered'",
        f"flaky-{run}",
    )
    assert delivered == 3

    # Never recovering: dead after the last attempt (4 here), then re-sent on request.
    await live.wait_row(
        "SELECT true FROM notification.deliveries WHERE subscription_id = $1 AND status = 'dead'",
        f"dead-{run}",
    )
    assert receiver.events("dead", order_id).count("order.shipped") == 4
    assert (
        await live.fetchval(
            "SELECT count(*) FROM notification.delivery_attempts a JOIN notification.deliveries d"
            " USING (delivery_id) WHERE d.subscription_id = $1",
            f"dead-{run}",
        )
        == 4
    )
    receiver.dead_recovered = True
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "libs.cli.main", "webhooks", "redeliver", "--subscription", f"dead-{run}"],
        env=live.fleet.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    await live.wait_row(
        "SELECT true FROM notification.deliveries WHERE subscription_id = $1 AND status = 'delivered'",
        f"dead-{run}",
    )
    receiver.release_slow.set()


async def test_one_email_per_status_with_tracking_and_the_status_api_shows_the_order(live: LiveFleet) -> None:
    item = f"MAIL-{secrets.token_hex(3)}"
    await live.seed(
        products=[product(item)],
        locations=[location(f"wh-{item}")],
        adjustments=[adjustment(f"i-{item}", item, f"wh-{item}", delta=5)],
    )
    external_id = await live.submit(order(lines=[(item, 1, "10.00")]))
    status = await live.wait_status(external_id, "in_fulfillment")
    order_id, shipment_id = status["order_id"], status["shipments"][0]["shipment_id"]
    await live.move(shipment_id, "shipped", carrier="DHL", tracking_number="JJD0099")
    await live.move(shipment_id, "delivered")
    await live.wait_status(external_id, "delivered")
    await live.submit(
        order(lines=[(item, 1, "10.00")], external_id=external_id)
    )  # a channel retry: no new mail

    def mails() -> list[Any]:
        return [m for m in live.mailbox.messages if external_id in str(m["Subject"])]

    for _ in range(300):
        if len(mails()) >= 3:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # would a duplicate arrive? (statuses were all consumed already)
    subjects = sorted(str(m["Subject"]) for m in mails())
    assert subjects == sorted(
        [
            f"We received your order {external_id}",
            f"Your order {external_id} is on its way",
            f"Your order {external_id} was delivered",
        ]
    )
    shipped_mail = next(m for m in mails() if "on its way" in str(m["Subject"]))
    assert "JJD0099" in shipped_mail.get_content()

    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            async with http.get(f"{live.api}/orders/{order_id}") as response:
                view = await response.json() if response.status == 200 else {}
            if view.get("status") == "delivered":
                break
            await asyncio.sleep(0.1)
        assert view["status"] == "delivered" and view["external_id"] == external_id
        assert view["shipments"][0]["tracking_number"] == "JJD0099"
        assert view["shipments"][0]["pipeline"] == "standard"
        assert [e["event"]["status"] for e in view["timeline"] if e["kind"] == "status"] == [
            "received",
            "validated",
            "allocated",
            "in_fulfillment",
            "shipped",
            "delivered",
        ]
        assert [e["event"]["entered_stage"] for e in view["timeline"] if e["kind"] == "stage"][:3] == [
            "new",
            "shipped",
            "delivered",
        ]
        async with http.get(
            f"{live.api}/orders", params={"channel": "webshop", "external_id": external_id}
        ) as r:
            assert (await r.json())["order_id"] == order_id
        async with http.get(f"{live.api}/orders/{secrets.token_hex(16)}") as r:
            assert r.status in (400, 404)
        async with http.get(f"{live.api}/openapi.json") as r:
            assert "/orders/{order_id}" in (await r.json())["paths"]
