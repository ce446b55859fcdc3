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

from libs.platform.secret_box import SecretBox, new_webhook_secret
from tests.e2e.conftest import LiveFleet
from tests.support.infra import free_port
from tests.support.orders import adjustment, location, order, product

pytestmark = pytest.mark.e2e

INTERNAL_HOST = "127.0.0.2"
"""Loopback, but not on the fleet's allow-list (127.0.0.1/32): stands for anything internal."""


class Receiver:
    """A local HTTP endpoint per behaviour: healthy, failing twice, always failing, hanging,
    redirecting (to ``redirect_to``)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.redirect_to = ""
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
        if name == "redirect":
            return web.Response(status=307, headers={"Location": self.redirect_to})
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.post("/{name}", self.handle)])
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        self.release_slow.set()
        if self._runner:
            await self._runner.cleanup()

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"

    def events(self, name: str, order_id: str) -> list[str]:
        out = []
        for request in self.received[name]:
            payload = orjson.loads(request["body"])
            if payload["data"].get("order_id") == order_id:
                out.append(payload["type"])
        return out


def signed_with(request: dict[str, Any], *secrets: str) -> bool:
    """Standard Webhooks check, written independently of Baton's signing code: the request carries
    one `v1,` signature per secret, in this order, each the HMAC of `id.timestamp.body`."""
    headers = {k.lower(): v for k, v in request["headers"].items()}
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request["body"]
    given = headers["webhook-signature"].split(" ")
    expected = [
        "v1,"
        + base64.b64encode(
            hmac.new(base64.b64decode(s.removeprefix("whsec_")), signed, hashlib.sha256).digest()
        ).decode()
        for s in secrets
    ]
    return len(given) == len(expected) and all(
        hmac.compare_digest(e, g) for e, g in zip(expected, given, strict=True)
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def internal_receiver() -> AsyncIterator[Receiver]:
    """A receiver on an internal address the fleet may not reach."""
    r = Receiver(INTERNAL_HOST)
    await r.start()
    yield r
    await r.stop()


async def baton(
    live: LiveFleet, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A `baton` command as the operator runs it (the fleet's key, the operator's logins)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "libs.cli.main", *args],
        env=live.fleet.env | (env or {}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def subscribe(live: LiveFleet, subscription_id: str, url: str, events: str) -> str:
    """Through the `baton webhooks add` command, as an operator would; returns the signing secret
    it generated and printed once."""
    result = await baton(
        live, "webhooks", "add", "--url", url, "--events", events, "--subscription-id", subscription_id
    )
    assert result.returncode == 0, result.stderr
    sid, secret = result.stdout.split()
    assert sid == subscription_id and secret.startswith("whsec_") and secret not in result.stderr
    await live.wait_row(
        "SELECT true FROM notification.subscriptions WHERE subscription_id = $1", subscription_id
    )
    return secret


async def queue_delivery(live: LiveFleet, subscription_id: str, body: bytes = b'{"n":1}') -> str:
    """A delivery due now, as fan-out would record one."""
    delivery_id = f"msg_{secrets.token_hex(8)}"
    await live.fetchval(
        "INSERT INTO notification.deliveries (delivery_id, subscription_id, event_key, body)"
        " VALUES ($1, $2, 'order.received', $3)",
        delivery_id,
        subscription_id,
        body,
    )
    return delivery_id


async def test_webhooks_are_signed_retried_dead_lettered_redelivered_and_isolated(
    live: LiveFleet, receiver: Receiver
) -> None:
    run = secrets.token_hex(3)
    keys = {}
    for name, events in (("ok", "*"), ("flaky", "order.shipped"), ("dead", "order.shipped"), ("slow", "*")):
        keys[name] = await subscribe(live, f"{name}-{run}", receiver.url(name), events)
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
    assert all(signed_with(r, keys["ok"]) for r in receiver.received["ok"])
    assert not any(signed_with(r, keys["flaky"]) for r in receiver.received["ok"])

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


async def test_a_rotated_secret_signs_beside_the_new_one_during_its_grace_window_then_the_new_one_alone(
    live: LiveFleet, receiver: Receiver
) -> None:
    sid = f"rot-{secrets.token_hex(3)}"
    old = await subscribe(live, sid, receiver.url("rot"), "order.received")

    rotated = await baton(live, "webhooks", "rotate-secret", sid, "--grace-hours", "1")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new.startswith("whsec_") and new != old
    await live.wait_row(
        "SELECT previous_secret_until > now() + interval '50 minutes' FROM notification.subscriptions"
        " WHERE subscription_id = $1",
        sid,
        what="the rotation applied",
    )
    during = await queue_delivery(live, sid)
    await live.wait_row(
        "SELECT status = 'delivered' FROM notification.deliveries WHERE delivery_id = $1", during
    )

    # The operator's own secret, from stdin (never on the command line), with no grace at all.
    own = new_webhook_secret()
    sealed_before = await live.fetchval(
        "SELECT secret_sealed FROM notification.subscriptions WHERE subscription_id = $1", sid
    )
    brought = await baton(
        live, "webhooks", "rotate-secret", sid, "--grace-hours", "0", "--secret-file", "-", stdin=own + "\n"
    )
    assert brought.returncode == 0, brought.stderr
    assert own not in brought.stdout + brought.stderr
    await live.wait_row(
        "SELECT secret_sealed <> $2 FROM notification.subscriptions WHERE subscription_id = $1",
        sid,
        sealed_before,
        what="the second rotation applied",
    )
    after = await queue_delivery(live, sid)
    await live.wait_row(
        "SELECT status = 'delivered' FROM notification.deliveries WHERE delivery_id = $1", after
    )

    by_id = {r["headers"]["webhook-id"]: r for r in receiver.received["rot"]}
    assert signed_with(by_id[during], new, old), "new first, then the old one, each verifiable"
    assert signed_with(by_id[after], own), "only the newest after a rotation without grace"
    stored = await live.fetchval(
        "SELECT concat_ws(' ', secret, secret_sealed, previous_secret_sealed) FROM notification.subscriptions"
        " WHERE subscription_id = $1",
        sid,
    )
    assert not any(secret in stored for secret in (old, new, own)), "secrets are stored sealed only"


async def test_a_subscription_to_an_internal_address_is_dead_lettered_and_its_receiver_gets_nothing(
    live: LiveFleet, internal_receiver: Receiver
) -> None:
    run = secrets.token_hex(3)
    refused = f"internal-{run}"
    result = await baton(
        live,
        "webhooks",
        "add",
        "--url",
        internal_receiver.url("hook"),
        "--events",
        "*",
        "--subscription-id",
        refused,
    )
    assert result.returncode == 0, result.stderr

    def dead_letter_of(key: str) -> dict[str, str] | None:
        for record in live.notification_dead_letters.raw:
            if record.key == key.encode():
                return {k: v.decode() for k, v in record.headers}
        return None

    await live.notification_dead_letters.wait_for(
        lambda _: dead_letter_of(refused) is not None, 60, f"the dead letter of {refused}"
    )
    headers = dead_letter_of(refused)
    assert headers is not None and headers["dlq-cause"] == "webhook_url_refused"
    assert headers["dlq-error"].startswith("loopback: ")
    assert (
        await live.fetchval(
            "SELECT count(*) FROM notification.subscriptions WHERE subscription_id = $1", refused
        )
        == 0
    )

    # A subscription stored before the guard existed, pointing inside: every send is refused.
    legacy = f"legacy-{run}"
    await live.fetchval(
        "INSERT INTO notification.subscriptions (subscription_id, url, secret_sealed, events)"
        " VALUES ($1, $2, $3, '{*}')",
        legacy,
        internal_receiver.url("legacy"),
        SecretBox(live.webhook_key).seal(new_webhook_secret()),
    )
    try:
        delivery = await queue_delivery(live, legacy)
        await live.wait_row(
            "SELECT status = 'dead' FROM notification.deliveries WHERE delivery_id = $1", delivery
        )
        errors = await live.fetchval(
            "SELECT array_agg(DISTINCT error) FROM notification.delivery_attempts WHERE delivery_id = $1",
            delivery,
        )
        assert errors == ["egress_refused"]
        assert (
            await live.fetchval(
                "SELECT last_error FROM notification.deliveries WHERE delivery_id = $1", delivery
            )
            == "egress_refused"
        )
        await live.notification_dead_letters.wait_for(
            lambda _: dead_letter_of(legacy) is not None, 60, f"the dead letter of {legacy}'s delivery"
        )
        legacy_letter = dead_letter_of(legacy)
        assert legacy_letter is not None and legacy_letter["dlq-error"] == "egress_refused"
    finally:
        await live.fetchval(
            "UPDATE notification.subscriptions SET active = false WHERE subscription_id = $1", legacy
        )
    assert internal_receiver.received == {}


async def test_a_redirect_to_an_internal_address_is_not_followed(
    live: LiveFleet, receiver: Receiver, internal_receiver: Receiver
) -> None:
    sid = f"redirect-{secrets.token_hex(3)}"
    receiver.redirect_to = internal_receiver.url("internal")
    await subscribe(live, sid, receiver.url("redirect"), "order.received")
    try:
        delivery = await queue_delivery(live, sid)
        await live.wait_row(
            "SELECT status = 'dead' FROM notification.deliveries WHERE delivery_id = $1", delivery
        )
        attempts = await live.fetchval(
            "SELECT array_agg(status_code::text || ' ' || error ORDER BY attempt)"
            " FROM notification.delivery_attempts WHERE delivery_id = $1",
            delivery,
        )
    finally:
        await remove_subscription(live, sid)
    assert attempts == ["307 redirect"] * 4
    assert len(receiver.received["redirect"]) == 4
    assert internal_receiver.received == {}


async def test_check_url_is_the_dispatchers_guard_with_the_fleets_settings(
    live: LiveFleet, receiver: Receiver, internal_receiver: Receiver
) -> None:
    fleets = {"BATON_WEBHOOK_ALLOWED_CIDRS": "127.0.0.1/32"}  # what the fleet's notification was given
    allowed = await baton(live, "webhooks", "check-url", receiver.url("ok"), env=fleets)
    refused = await baton(live, "webhooks", "check-url", internal_receiver.url("hook"), env=fleets)
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "allowed")
    assert refused.returncode == 1 and refused.stdout.startswith("refused: loopback: ")
