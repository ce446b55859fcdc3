"""Notification's adapters on the real thing: its SQL on PostgreSQL, the SMTP sender on an SMTP
server (aiosmtpd), the webhook sender and the status API over HTTP on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from libs.contracts.fulfillment import StageChanged
from libs.contracts.notification import ApiKeyChanged, WebhookSubscriptionChanged
from libs.contracts.orders import OrderStatusChanged, Shipment, ShipmentLine
from libs.contracts.vocabulary import OrderStatus
from libs.platform.db import create_pool, ensure_database, migrate
from libs.platform.messaging import dead_letter_of
from libs.platform.secret_box import SecretBox, new_key, new_webhook_secret
from services.notification.adapters.http_api import build_api
from services.notification.adapters.smtp import AioSmtpSender
from services.notification.adapters.store import (
    PgDeliveryQueue,
    PgEmailQueue,
    PgNotificationUnit,
    PgOrderStatusQueries,
    PgSubscriptionSecrets,
    SubscriptionCache,
)
from services.notification.adapters.webhooks import AiohttpWebhookSender
from services.notification.app.egress import EgressGuard
from services.notification.app.ports import (
    Attempt,
    Contact,
    Dead,
    Delivered,
    EmailResult,
    Mail,
    NewDelivery,
    NewEmail,
    Retry,
)
from services.notification.app.use_cases import (
    change_api_key,
    change_subscription,
    record_stage_changes,
    record_status_changes,
)
from services.notification.domain.api_keys import digest
from services.notification.domain.api_keys import new_key as new_api_key
from services.notification.domain.egress import EgressPolicy, parse_networks
from services.notification.domain.webhooks import verify
from services.notification.settings import NotificationSettings
from tests.support.infra import Infra, free_port, fresh_environment, fresh_name
from tests.unit.fakes.notification import FakeResolver

pytestmark = pytest.mark.integration

SECRET = new_webhook_secret()
BOX_KEY = new_key()
BOX = SecretBox(BOX_KEY)
GUARD = EgressGuard(EgressPolicy(), FakeResolver({"example.test": [["93.184.216.34"]]}))
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.fixture
async def pool(infra: Infra) -> AsyncIterator[asyncpg.Pool]:
    dsn = infra.database_url(fresh_name("notification"))
    await ensure_database(dsn)
    await migrate(dsn, "notification", "services.notification.adapters.migrations")
    created = await create_pool(dsn, "notification", 4)
    try:
        yield created
    finally:
        await created.close()


class Units:
    """Transactions as the router runs them: one unit per transaction, one cache for all."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.cache = SubscriptionCache()

    async def run(self, use_case: Any, arg: Any) -> Any:
        async with self.pool.acquire() as conn, conn.transaction():
            return await use_case(arg, PgNotificationUnit(conn, self.cache))

    async def change(self, command: WebhookSubscriptionChanged) -> Any:
        async with self.pool.acquire() as conn, conn.transaction():
            return await change_subscription(command, PgNotificationUnit(conn, self.cache), GUARD, BOX)


def adding(subscription_id: str, url: str, *events: str) -> WebhookSubscriptionChanged:
    return WebhookSubscriptionChanged(
        action="add",
        subscription_id=subscription_id,
        url=url,
        secret_ciphertext=BOX.seal(SECRET),
        events=list(events),
    )


async def subscribe(units: Units, subscription_id: str, url: str, *events: str) -> None:
    await units.change(adding(subscription_id, url, *events))


def status(order_id: UUID, value: OrderStatus, version: int, **fields: Any) -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id=order_id,
        channel="webshop",
        external_id=f"ext-{order_id.hex[:6]}",
        status=value,
        version=version,
        occurred_at=T0 + timedelta(minutes=version),
        **fields,
    )


async def test_a_status_batch_is_recorded_set_based_and_the_highest_version_wins(pool: asyncpg.Pool) -> None:
    units = Units(pool)
    await subscribe(units, "all", "https://example.test/all", "*")
    order_id = uuid4()
    parcel = Shipment(shipment_id="p1", location_id="wh", lines=[ShipmentLine(sku="MUG", quantity=1)])
    shipped = parcel.model_copy(update={"tracking_number": "1Z"})

    shipped_event = status(order_id, OrderStatus.SHIPPED, 5, shipments=[shipped])
    await units.run(
        record_status_changes,
        [
            status(order_id, OrderStatus.RECEIVED, 1),
            status(order_id, OrderStatus.IN_FULFILLMENT, 4, shipments=[parcel], eta=T0),
            shipped_event,
            status(order_id, OrderStatus.ALLOCATED, 3, shipments=[parcel]),
        ],
    )
    await units.run(record_status_changes, [status(order_id, OrderStatus.VALIDATED, 2)])
    await units.run(record_status_changes, [shipped_event])  # a replayed event

    async with pool.acquire() as conn:
        view = await conn.fetchrow("SELECT status, version, eta, shipments::text FROM order_views")
        timeline = await conn.fetch("SELECT event::text FROM order_timeline ORDER BY seq")
        emails = await conn.fetch("SELECT status, context::text FROM emails ORDER BY status")
        deliveries = await conn.fetchval("SELECT count(*) FROM deliveries")
    assert (view["status"], view["version"], view["eta"]) == ("shipped", 5, T0)
    assert [s["tracking_number"] for s in orjson.loads(view["shipments"])] == ["1Z"]
    assert [orjson.loads(r["event"])["version"] for r in timeline] == [1, 4, 5, 3, 2, 5]
    assert [(r["status"], orjson.loads(r["context"])) for r in emails] == [
        ("received", {"eta": "to follow", "tracking": "to follow"}),
        ("shipped", {"eta": "to follow", "tracking": "1Z"}),  # the e-mail tells the ETA its status carries
    ]
    assert deliveries == 5, "one per event and subscriber; the repeated event adds none"


async def test_a_stage_batch_folds_each_parcel_and_leaving_keeps_its_last_stage(pool: asyncpg.Pool) -> None:
    units = Units(pool)
    order_id = uuid4()

    def change(shipment: str, kind: str, entered: str | None, left: str | None) -> StageChanged:
        return StageChanged(
            order_id=order_id,
            shipment_id=shipment,
            pipeline="standard",
            entered_stage=entered,
            left_stage=left,
            change=kind,  # type: ignore[arg-type]
        )

    await units.run(
        record_stage_changes,
        [
            change("p1", "entered", "new", None),
            change("p1", "moved", "packed", "new"),
            change("p2", "entered", "new", None),
        ],
    )
    await units.run(record_stage_changes, [change("p1", "left", None, "packed")])

    async with pool.acquire() as conn:
        stages = dict(await conn.fetch("SELECT shipment_id, stage FROM shipment_stages"))
        kinds = await conn.fetchval("SELECT array_agg(kind ORDER BY seq) FROM order_timeline")
    assert stages == {"p1": "packed", "p2": "new"}
    assert kinds == ["stage"] * 4


async def test_the_subscription_cache_sees_a_change_once_its_transaction_committed(
    pool: asyncpg.Pool,
) -> None:
    units = Units(pool)
    await subscribe(units, "first", "https://example.test/1", "*")
    async with pool.acquire() as reader:
        assert [
            s.subscription_id for s in await PgNotificationUnit(reader, units.cache).subscriptions.active()
        ] == ["first"]
        async with pool.acquire() as writer:
            tx = writer.transaction()
            await tx.start()
            await change_subscription(
                adding("second", "https://example.test/2", "*"),
                PgNotificationUnit(writer, units.cache),
                GUARD,
                BOX,
            )
            during = await PgNotificationUnit(reader, units.cache).subscriptions.active()
            await tx.commit()
            after = await PgNotificationUnit(reader, units.cache).subscriptions.active()
    assert [s.subscription_id for s in during] == ["first"]
    assert sorted(s.subscription_id for s in after) == ["first", "second"]


async def queue(pool: asyncpg.Pool, subscription_id: str, n: int, age_s: int = 0) -> list[str]:
    ids = [f"msg_{subscription_id}_{i}" for i in range(n)]
    async with pool.acquire() as conn:
        await PgNotificationUnit(conn, SubscriptionCache()).deliveries.add(
            [NewDelivery(i, subscription_id, "order.shipped", b"{}") for i in ids]
        )
        await conn.execute(
            "UPDATE deliveries SET next_attempt_at = now() - make_interval(secs => $2 + ordinal)"
            " FROM unnest($1::text[]) WITH ORDINALITY AS d(id, ordinal) WHERE delivery_id = d.id",
            ids,
            float(age_s),
        )
    return ids


async def test_each_subscription_claims_its_own_oldest_due_deliveries_up_to_its_free_slots(
    pool: asyncpg.Pool,
) -> None:
    units = Units(pool)
    for sid in ("backlog", "healthy", "removed"):
        await subscribe(units, sid, f"https://example.test/{sid}", "*")
    backlog = await queue(pool, "backlog", 300, age_s=3600)
    [healthy] = await queue(pool, "healthy", 1)
    await queue(pool, "removed", 5)
    await units.change(WebhookSubscriptionChanged(action="remove", subscription_id="removed"))
    deliveries = PgDeliveryQueue(pool)

    first = await deliveries.claim(4, {}, 60.0)
    again = await deliveries.claim(4, {"backlog": 4}, 60.0)

    assert sorted(d.delivery_id for d in first if d.subscription_id == "backlog") == sorted(backlog[-4:])
    assert [d.delivery_id for d in first if d.subscription_id == "healthy"] == [healthy]
    assert {d.subscription_id for d in first} == {"backlog", "healthy"}
    assert again == [], "the backlog's slots are full and the healthy one's delivery is leased"
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE subscription_id = 'removed' AND status = 'cancelled'"
            )
            == 5
        )


async def test_an_attempt_is_recorded_and_the_delivery_retried_delivered_or_dead_unless_cancelled(
    pool: asyncpg.Pool,
) -> None:
    units = Units(pool)
    await subscribe(units, "s", "https://example.test/s", "*")
    await queue(pool, "s", 4)
    retry, delivered, dead, cancelled = sorted(
        await PgDeliveryQueue(pool).claim(4, {}, 60.0), key=lambda d: d.delivery_id
    )
    deliveries = PgDeliveryQueue(pool)
    letter = dead_letter_of(
        "notification.dead-letters.v1", key="s", value=b"{}", cause="webhook_undeliverable", detail="HTTP 500"
    )

    assert await deliveries.record(retry, Attempt(500, "HTTP 500", 12), Retry(30.0))
    assert await deliveries.record(delivered, Attempt(204, None, 5), Delivered())
    assert await deliveries.record(dead, Attempt(500, "HTTP 500", 7), Dead(letter))
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE deliveries SET status = 'cancelled' WHERE delivery_id = $1", cancelled.delivery_id
        )
    assert not await deliveries.record(cancelled, Attempt(204, None, 5), Delivered())

    async with pool.acquire() as conn:
        rows = {
            r["delivery_id"]: r
            for r in await conn.fetch(
                "SELECT delivery_id, status, attempts, round_attempts, last_error,"
                " next_attempt_at > now() + interval '20 seconds' AS later, delivered_at IS NOT NULL AS stamped"
                " FROM deliveries"
            )
        }
        attempts = await conn.fetchval("SELECT count(*) FROM delivery_attempts")
        outbox = await conn.fetch("SELECT topic, key, headers::text FROM outbox")
    assert (rows[retry.delivery_id]["status"], rows[retry.delivery_id]["later"]) == ("pending", True)
    assert (rows[delivered.delivery_id]["status"], rows[delivered.delivery_id]["stamped"]) == (
        "delivered",
        True,
    )
    assert rows[dead.delivery_id]["status"] == "dead"
    assert rows[cancelled.delivery_id]["status"] == "cancelled"
    assert all(r["attempts"] == 1 and r["round_attempts"] == 1 for r in rows.values())
    assert attempts == 4
    [(topic, key, headers)] = outbox
    assert (topic, key, orjson.loads(headers)["dlq-cause"]) == (
        "notification.dead-letters.v1",
        "s",
        "webhook_undeliverable",
    )


async def test_a_rotated_secret_signs_beside_the_new_one_until_its_grace_window_ends(
    pool: asyncpg.Pool,
) -> None:
    units = Units(pool)
    await subscribe(units, "rot", "https://example.test/rot", "*")
    new = new_webhook_secret()
    await units.change(
        WebhookSubscriptionChanged(
            action="rotate_secret", subscription_id="rot", secret_ciphertext=BOX.seal(new), grace_hours=1
        )
    )
    await queue(pool, "rot", 2)
    deliveries = PgDeliveryQueue(pool)

    [during, _] = await deliveries.claim(2, {}, 0.0)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE subscriptions SET previous_secret_until = now() - interval '1 second'")
    [after, _] = await deliveries.claim(2, {}, 0.0)

    assert [BOX.open(s) for s in during.secrets] == [new, SECRET]
    assert [BOX.open(s) for s in after.secrets] == [new]
    async with pool.acquire() as conn:
        stored = await conn.fetchrow(
            "SELECT secret, secret_sealed, previous_secret_sealed FROM subscriptions"
        )
    assert stored["secret"] is None
    assert SECRET not in str(dict(stored)) and new not in str(dict(stored))


async def test_clear_secrets_of_an_earlier_release_are_sealed_and_a_key_change_reseals_the_rest(
    pool: asyncpg.Pool,
) -> None:
    units = Units(pool)
    await subscribe(units, "sealed", "https://example.test/sealed", "*")
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO subscriptions (subscription_id, url, secret, events)"
            " VALUES ('legacy', 'https://example.test/legacy', $1, '{*}')",
            SECRET,
        )
    rotated = SecretBox(f"{new_key()},{BOX_KEY}")
    secrets = PgSubscriptionSecrets(pool)

    first = await secrets.seal_all(rotated.seal, rotated.reseal)
    again = await secrets.seal_all(rotated.seal, rotated.reseal)

    assert first == (1, 1) and again == (0, 0)
    async with pool.acquire() as conn:
        rows = {r["subscription_id"]: r for r in await conn.fetch("SELECT * FROM subscriptions")}
    assert [rows[s]["secret"] for s in ("legacy", "sealed")] == [None, None]
    for sid in ("legacy", "sealed"):
        assert rotated.open(rows[sid]["secret_sealed"]) == SECRET
        assert BOX.open(rows[sid]["secret_sealed"]) is None, "sealed under the new key, not the old"


async def test_an_email_round_holds_its_emails_and_records_each_outcome(pool: asyncpg.Pool) -> None:
    orders = [uuid4() for _ in range(3)]
    async with pool.acquire() as conn:
        unit = PgNotificationUnit(conn, SubscriptionCache())
        await unit.customers.remember(
            [Contact(o, f"{o.hex[:4]}@example.test", "Ada", "ext") for o in orders[:2]]
        )
        await unit.emails.add([NewEmail(o, "shipped", {"tracking": "1Z"}) for o in orders])
    emails = PgEmailQueue(pool)

    async with emails.round(10) as first:
        assert sorted(e.order_id for e in first.due) == sorted(orders[:2]), "the third has no address yet"
        async with emails.round(10) as concurrent:
            assert list(concurrent.due) == []
        sent, failed = first.due
        await first.record(
            [
                EmailResult(sent.order_id, "shipped", "sent"),
                EmailResult(failed.order_id, "shipped", "retry", "550 no such user", 30.0),
            ]
        )
    async with emails.round(10) as later:
        assert list(later.due) == []

    async with pool.acquire() as conn:
        rows = {
            r["order_id"]: r
            for r in await conn.fetch(
                "SELECT order_id, state, attempts, last_error, sent_at IS NOT NULL AS stamped FROM emails"
            )
        }
    assert (rows[sent.order_id]["state"], rows[sent.order_id]["stamped"]) == ("sent", True)
    assert (rows[failed.order_id]["state"], rows[failed.order_id]["attempts"]) == ("pending", 1)
    assert rows[failed.order_id]["last_error"] == "550 no such user"


class RefusingMailbox:
    """An SMTP server that refuses one recipient and keeps what it accepts."""

    def __init__(self, refused: str) -> None:
        self.refused = refused
        self.accepted: list[bytes] = []
        self.envelopes: list[list[str]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address == self.refused:
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted.append(envelope.content)
        self.envelopes.append(list(envelope.rcpt_tos))
        return "250 OK"


def mail(n: int, recipient: str = "ada@example.test") -> Mail:
    return Mail(f"<o{n}.shipped@baton>", "orders@baton.test", recipient, f"Order {n}", "Hello\n")


async def test_the_smtp_sender_sends_each_message_and_a_refused_one_fails_alone() -> None:
    mailbox = RefusingMailbox("nobody@example.test")
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        sender = AioSmtpSender(
            NotificationSettings(smtp_host="127.0.0.1", smtp_port=port, smtp_connections=2)
        )
        results = await sender.send([mail(1), mail(2, "nobody@example.test"), mail(3), mail(4)])
    finally:
        controller.stop()
    assert [r is None for r in results] == [True, False, True, True]
    assert results[1] is not None and "550" in results[1]
    assert sorted(b"Message-ID: <o" in m for m in mailbox.accepted) == [True, True, True]
    assert sorted(mailbox.envelopes) == [["ada@example.test"]] * 3, "one recipient per envelope"


async def test_the_smtp_sender_never_puts_a_list_of_addresses_on_an_envelope() -> None:
    mailbox = RefusingMailbox("nobody@example.test")
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        sender = AioSmtpSender(NotificationSettings(smtp_host="127.0.0.1", smtp_port=port))
        results = await sender.send([mail(1, "victim@example.com, list@evil.example"), mail(2)])
    finally:
        controller.stop()
    assert results[0] is not None and results[1] is None
    assert mailbox.envelopes == [["ada@example.test"]]


async def test_the_smtp_sender_reports_every_message_failed_when_no_server_answers() -> None:
    sender = AioSmtpSender(
        NotificationSettings(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_timeout_s=2)
    )
    results = await sender.send([mail(1), mail(2), mail(3)])
    assert all(r is not None for r in results)


async def test_the_webhook_sender_signs_each_post_and_reports_statuses_and_transport_errors() -> None:
    received: list[web.Request] = []
    bodies: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(request)
        bodies.append(await request.read())
        return web.Response(status=int(request.match_info["status"]))

    app = web.Application()
    app.add_routes([web.post("/{status}", hook)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    allowed = EgressGuard(EgressPolicy(allowed=parse_networks("127.0.0.1/32")), FakeResolver())
    sender = AiohttpWebhookSender(timeout_s=2, guard=allowed)
    await sender.open()
    try:
        ok = await sender.post(f"http://127.0.0.1:{port}/204", [SECRET], "msg_1", b'{"a":1}')
        failing = await sender.post(f"http://127.0.0.1:{port}/500", [SECRET], "msg_2", b"{}")
        refused = await sender.post(f"http://127.0.0.1:{free_port()}/204", [SECRET], "msg_3", b"{}")
    finally:
        await sender.close()
        await runner.cleanup()
    assert (ok.status_code, ok.transport_error) == (204, None)
    assert (failing.status_code, failing.transport_error) == (500, None)
    assert (refused.status_code, refused.transport_error) == (None, "refused")
    headers = received[0].headers
    assert headers["webhook-id"] == "msg_1"
    assert verify(SECRET, "msg_1", int(headers["webhook-timestamp"]), bodies[0], headers["webhook-signature"])


async def test_the_status_api_shows_an_order_with_its_parcels_stages_and_timeline(pool: asyncpg.Pool) -> None:
    units = Units(pool)
    order_id = uuid4()
    parcel = Shipment(
        shipment_id="p1", location_id="wh", lines=[ShipmentLine(sku="MUG", quantity=1)], tracking_number="1Z"
    )
    await units.run(record_status_changes, [status(order_id, OrderStatus.SHIPPED, 5, shipments=[parcel])])
    await units.run(
        record_stage_changes,
        [
            StageChanged(
                order_id=order_id,
                shipment_id="p1",
                pipeline="standard",
                entered_stage="shipped",
                left_stage="packed",
                change="moved",
            )
        ],
    )
    key = new_api_key()
    await units.run(
        change_api_key,
        ApiKeyChanged(action="add", key_id="k1", key_hash=digest(key), channels=["webshop"]),
    )
    runner = web.AppRunner(build_api(PgOrderStatusQueries(pool), rate_per_s=100, burst=100))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    auth = {"Authorization": f"Bearer {key}"}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=auth) as http:
            async with http.get(f"/orders/{order_id}") as r:
                view = await r.json()
            async with http.get(
                "/orders", params={"channel": "webshop", "external_id": f"ext-{order_id.hex[:6]}"}
            ) as r:
                found = await r.json()
            async with http.get(f"/orders/{uuid4()}") as r:
                missing = r.status
            async with http.get("/readyz") as r:
                ready = r.status
    finally:
        await runner.cleanup()
    assert (view["status"], view["shipments"][0]["stage"], view["shipments"][0]["tracking_number"]) == (
        "shipped",
        "shipped",
        "1Z",
    )
    assert [e["kind"] for e in view["timeline"]] == ["status", "stage"]
    assert found["order_id"] == str(order_id)
    assert (missing, ready) == (404, 200)


async def test_notification_without_a_secrets_key_refuses_to_start_with_one_line_naming_it(
    infra: Infra,
) -> None:
    environment = await fresh_environment(
        infra, schemas={"notification": "services.notification.adapters.migrations"}
    )
    try:
        env = {
            k: v for k, v in environment.env_for("notification").items() if k != "BATON_WEBHOOK_SECRETS_KEY"
        }
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "libs.cli.main", "run", "notification"],
            env=env | {"BATON_HTTP_PORT": "0"},
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        await environment.drop()
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "BATON_WEBHOOK_SECRETS_KEY is not set" in output and "Traceback" not in output


async def test_status_api_keys_are_stored_as_digests_scoped_to_channels_limited_and_revocable(
    pool: asyncpg.Pool,
) -> None:
    units = Units(pool)
    order_id = uuid4()
    await units.run(record_status_changes, [status(order_id, OrderStatus.RECEIVED, 1)])
    webshop, other, support = new_api_key(), new_api_key(), new_api_key()
    for key_id, key, channels in (
        ("web", webshop, ["webshop"]),
        ("pos", other, ["pos"]),
        ("all", support, ["*"]),
    ):
        await units.run(
            change_api_key,
            ApiKeyChanged(action="add", key_id=key_id, name=key_id, key_hash=digest(key), channels=channels),
        )
    stored = await pool.fetch("SELECT * FROM api_keys")
    assert all(key not in str(dict(row)) for row in stored for key in (webshop, other, support))
    runner = web.AppRunner(build_api(PgOrderStatusQueries(pool), rate_per_s=0.5, burst=3))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    async def get(key: str | None, path: str = f"/orders/{order_id}") -> tuple[int, dict[str, str]]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with http.get(path, headers=headers) as r:
            return r.status, dict(r.headers)

    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            assert (await get(webshop))[0] == 200
            assert (await get(support))[0] == 200
            assert (await get(other))[0] == 404, "another channel's order is not found, not forbidden"
            assert (await get(other, "/orders?channel=webshop&external_id=x"))[0] == 404
            assert (await get(None))[0] == 401
            assert (await get("baton_not-a-key"))[0] == 401
            assert (await get(None, "/openapi.json"))[0] == 200
            assert (await get(None, "/livez"))[0] == 200
            answers = [await get(webshop) for _ in range(3)]  # a burst of 3, the first one spent
            assert [a[0] for a in answers] == [200, 200, 429]
            assert int(answers[-1][1]["Retry-After"]) >= 1
            assert (await get(support))[0] == 200, "each key has a bucket of its own"
            await units.run(change_api_key, ApiKeyChanged(action="revoke", key_id="all"))
            assert (await get(support))[0] == 401, "a revoked key is refused"
            assert (await get(None))[0] == 429, "failed log-ins from one address are limited too"
    finally:
        await runner.cleanup()
