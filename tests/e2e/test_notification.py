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
from uuid import UUID

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
    dead_attempts = [
        r
        for r in receiver.received["dead"]
        if orjson.loads(r["body"])["data"].get("order_id") == order_id
        and orjson.loads(r["body"])["type"] == "order.shipped"
    ]
    assert len(dead_attempts) == 5, "four failed attempts, then the redelivered one"
    assert len({r["headers"]["webhook-id"] for r in dead_attempts}) == 1
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
    retry = order(lines=[(item, 1, "10.00")], external_id=external_id)
    await live.submit(retry)  # a channel retry: no new order, no new mail
    # Barrier on the same key: a conflicting payload after the retry is refused, so the retry was consumed.
    await live.submit(retry | {"currency": "USD"})
    await live.refused.wait_for(
        lambda rs: any(r.get("external_id") == external_id for r in rs), 60, "the conflicting payload refused"
    )

    def mails() -> list[Any]:
        return [m for m in live.mailbox.messages if external_id in str(m["Subject"])]

    await live.wait_row(
        "SELECT count(*) = 3 AND bool_and(state = 'sent') FROM notification.emails WHERE order_id = $1",
        UUID(order_id),
        what="the three e-mails of the order sent",
    )
    for _ in range(300):
        if len(mails()) >= 3:
            break
        await asyncio.sleep(0.1)
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

    _, key = await live.api_key("webshop")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
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


async def remove_subscription(live: LiveFleet, subscription_id: str) -> None:
    """Through `baton webhooks remove`, as an operator would."""
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "libs.cli.main", "webhooks", "remove", subscription_id],
        env=live.fleet.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


async def test_a_backlog_at_dead_endpoints_never_starves_another_subscriber(
    live: LiveFleet, receiver: Receiver
) -> None:
    """Two subscribers whose endpoints are gone (one never answers, one refuses connections) with
    1,200 deliveries due each: a third subscriber still gets its deliveries, and removing the two
    cancels their backlog instead of sending it."""
    run = secrets.token_hex(3)
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # holds the connection open and says nothing

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    hanging, refusing, healthy = f"hang-{run}", f"refuse-{run}", f"ok-{run}"
    try:
        await subscribe(live, hanging, f"http://127.0.0.1:{silent_port}/hook", "order.backlog-only")
        await subscribe(live, refusing, f"http://127.0.0.1:{free_port()}/hook", "order.backlog-only")
        # The backlog a demo run leaves behind at endpoints that went away, due now.
        for sid in (hanging, refusing):
            await live.fetchval(
                "INSERT INTO notification.deliveries (delivery_id, subscription_id, event_key, body)"
                " SELECT 'msg_backlog_' || $1 || '_' || g, $1, 'order.backlog-only', '{}'::bytea"
                " FROM generate_series(1, 1200) AS g",
                sid,
            )
        await subscribe(live, healthy, receiver.url("ok"), "order.received")
        item = f"FAIR-{run}"
        await live.seed(products=[product(item)])
        external_id = await live.submit(order(lines=[(item, 1, "10.00")]))
        order_id = (await live.wait_status(external_id, "received"))["order_id"]
        for _ in range(200):
            if "order.received" in receiver.events("ok", order_id):
                break
            await asyncio.sleep(0.1)
        assert "order.received" in receiver.events("ok", order_id), (
            "the healthy subscriber got nothing within 20 s while others had a backlog"
        )

        for sid in (hanging, refusing):
            await remove_subscription(live, sid)
        for sid in (hanging, refusing):
            await live.wait_row(
                "SELECT count(*) = 0 FROM notification.deliveries WHERE subscription_id = $1"
                " AND status = 'pending'",
                sid,
                what=f"{sid}'s backlog to be cancelled",
            )
        # The endpoint that never answers used its 4 slots for at most a few attempts each: the
        # rest of its backlog was cancelled unsent. Nothing of either was attempted after removal
        # (an attempt already in flight may end up to one timeout later).
        never_sent = await live.fetchval(
            "SELECT count(*) FROM notification.deliveries WHERE subscription_id = $1"
            " AND status = 'cancelled' AND attempts = 0",
            hanging,
        )
        assert never_sent >= 1000, f"only {never_sent} of 1,200 deliveries were cancelled unsent"
        started_after_removal = await live.fetchval(
            "SELECT count(*) FROM notification.delivery_attempts a"
            " JOIN notification.deliveries d USING (delivery_id)"
            " JOIN notification.subscriptions s USING (subscription_id)"
            " WHERE s.subscription_id = ANY($1::text[])"
            " AND a.attempted_at - make_interval(secs => a.duration_ms / 1000.0) > s.updated_at + interval '1 second'",
            [hanging, refusing],
        )
        assert started_after_removal == 0
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await live.fetchval(
            "UPDATE notification.subscriptions SET active = false WHERE subscription_id = ANY($1::text[])",
            [hanging, refusing, healthy],
        )
