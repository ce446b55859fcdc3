"""The HTTP intake gateway in memory: its answers (202, 401, 403, 413, 422, 429, 503) and the records
it would produce, on fakes of its Kafka side (a real aiohttp server on a loopback port, no broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from libs.api_keys import ApiKey, KeyRing, digest
from libs.contracts.identity import order_id_for
from libs.contracts.orders import CancelRequested, EditRequested, OrderSubmitted
from services.gateway.app.ports import BrokerUnavailable
from services.gateway.entry import build_api
from services.intake.domain.orders import order_id_for as intake_order_id_for
from tests.support.orders import order

pytestmark = pytest.mark.unit

WEBSHOP_KEY = "baton_webshop-key"
TWO_CHANNEL_KEY = "baton_two-channels"
SUPPORT_KEY = "baton_support-reads-all"


class FakeOrderCommands:
    def __init__(self) -> None:
        self.orders: list[OrderSubmitted] = []
        self.cancels: list[CancelRequested] = []
        self.edits: list[EditRequested] = []
        self.down = False

    async def submit(self, order: OrderSubmitted) -> None:
        if self.down:
            raise BrokerUnavailable("KafkaTimeoutError")
        self.orders.append(order)

    async def cancel(self, request: CancelRequested) -> None:
        if self.down:
            raise BrokerUnavailable("KafkaTimeoutError")
        self.cancels.append(request)

    async def edit(self, request: EditRequested) -> None:
        if self.down:
            raise BrokerUnavailable("KafkaTimeoutError")
        self.edits.append(request)


class FakeKeyDirectory:
    def __init__(self) -> None:
        self.ring = KeyRing()
        self.ring.add("key_web", digest(WEBSHOP_KEY), frozenset({"webshop"}))
        self.ring.add("key_two", digest(TWO_CHANNEL_KEY), frozenset({"webshop", "marketplace"}))
        self.ring.add("key_all", digest(SUPPORT_KEY), frozenset({"*"}))

    def find(self, key_digest: str) -> ApiKey | None:
        return self.ring.find(key_digest)

    def ready(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def commands() -> FakeOrderCommands:
    return FakeOrderCommands()


@pytest.fixture
def keys() -> FakeKeyDirectory:
    return FakeKeyDirectory()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(
    commands: FakeOrderCommands, keys: FakeKeyDirectory, clock: Clock
) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_api(commands, keys, max_body_bytes=8 * 1024, rate_per_s=2, burst=3, clock=clock)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def bearer(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


async def test_an_order_is_accepted_with_the_id_intake_gives_it_once_the_record_is_produced(
    client: TestClient[Any, Any], commands: FakeOrderCommands
) -> None:
    body = order("web-1001")
    response = await client.post(
        "/v1/orders", json=body, headers=bearer(WEBSHOP_KEY, **{"Idempotency-Key": "webshop:web-1001"})
    )
    assert response.status == 202
    answer = await response.json()
    assert (
        UUID(answer["order_id"])
        == order_id_for("webshop", "web-1001")
        == intake_order_id_for("webshop", "web-1001")
    )
    assert (answer["channel"], answer["external_id"]) == ("webshop", "web-1001")
    [produced] = commands.orders
    assert produced == OrderSubmitted.model_validate(body)


async def test_resubmitting_the_same_order_answers_the_same_id(
    client: TestClient[Any, Any], commands: FakeOrderCommands
) -> None:
    body = order("web-1002")
    ids = []
    for _ in range(2):
        response = await client.post("/v1/orders", json=body, headers=bearer(WEBSHOP_KEY))
        assert response.status == 202
        ids.append((await response.json())["order_id"])
    assert ids[0] == ids[1]
    assert [o.channel_key for o in commands.orders] == ["webshop:web-1002"] * 2  # intake de-duplicates


async def test_an_idempotency_key_that_is_not_the_orders_channel_key_is_refused(
    client: TestClient[Any, Any], commands: FakeOrderCommands
) -> None:
    response = await client.post(
        "/v1/orders", json=order("web-1003"), headers=bearer(WEBSHOP_KEY, **{"Idempotency-Key": "web-1003"})
    )
    assert response.status == 422
    assert "Idempotency-Key" in (await response.json())["error"]
    assert commands.orders == []


async def test_a_bad_body_is_answered_422_with_every_failed_field_and_nothing_is_produced(
    client: TestClient[Any, Any], commands: FakeOrderCommands
) -> None:
    body = order("web-1004")
    del body["customer"]
    body["lines"][0]["unit_price"] = "ten euros"
    body["shipping_address"]["city"] = "Berlin\u202e"  # a bidi override: not one line of printable text
    response = await client.post("/v1/orders", json=body, headers=bearer(WEBSHOP_KEY))
    assert response.status == 422
    answer = await response.json()
    where = {tuple(f["loc"]) for f in answer["fields"]}
    assert {("customer",), ("lines", 0, "unit_price"), ("shipping_address", "city")} <= where
    assert all(set(f) == {"loc", "msg", "type"} for f in answer["fields"])  # never the rejected value
    assert commands.orders == []


async def test_a_body_that_is_not_json_is_answered_422(client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/orders", data=b"{not json", headers=bearer(WEBSHOP_KEY))
    assert response.status == 422


async def test_a_body_over_the_limit_is_answered_413_whether_declared_or_streamed(
    client: TestClient[Any, Any], commands: FakeOrderCommands
) -> None:
    body = order("web-1005", lines=[(f"SKU-{i:04d}", 1, "1.00") for i in range(200)])
    raw = orjson.dumps(body)
    assert len(raw) > 8 * 1024
    response = await client.post("/v1/orders", data=raw, headers=bearer(WEBSHOP_KEY))
    assert response.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut off at the limit while read
        for i in range(0, len(raw), 1024):
            yield raw[i : i + 1024]

    response = await client.post("/v1/orders", data=chunks(), headers=bearer(WEBSHOP_KEY))
    assert response.status == 413
    assert commands.orders == []


async def test_no_key_or_an_unknown_key_is_answered_401(client: TestClient[Any, Any]) -> None:
    for headers in ({}, bearer("baton_made-up"), {"Authorization": "Basic dXNlcjpwdw=="}):
        response = await client.post("/v1/orders", json=order(), headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_key_submits_only_for_its_own_channels_and_a_read_all_key_for_none(
    client: TestClient[Any, Any], commands: FakeOrderCommands
) -> None:
    other = order("mp-1", channel="marketplace")
    assert (await client.post("/v1/orders", json=other, headers=bearer(WEBSHOP_KEY))).status == 403
    assert (await client.post("/v1/orders", json=other, headers=bearer(SUPPORT_KEY))).status == 403
    assert (await client.post("/v1/orders", json=other, headers=bearer(TWO_CHANNEL_KEY))).status == 202
    assert [o.channel for o in commands.orders] == ["marketplace"]


async def test_a_key_over_its_rate_is_answered_429_with_retry_after_and_recovers(
    client: TestClient[Any, Any], clock: Clock
) -> None:
    statuses = [
        (await client.post("/v1/orders", json=order(), headers=bearer(WEBSHOP_KEY))).status for _ in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    limited = await client.post("/v1/orders", json=order(), headers=bearer(WEBSHOP_KEY))
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    other_key = await client.post("/v1/orders", json=order(), headers=bearer(TWO_CHANNEL_KEY))
    assert other_key.status == 202  # each key has its own bucket
    clock.now += 1.0
    assert (await client.post("/v1/orders", json=order(), headers=bearer(WEBSHOP_KEY))).status == 202


async def test_failed_log_ins_are_limited_per_client_address(client: TestClient[Any, Any]) -> None:
    statuses = [
        (await client.post("/v1/orders", json={}, headers=bearer(f"baton_guess-{i}"))).status
        for i in range(5)
    ]
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429]


async def test_a_broker_that_does_not_acknowledge_is_answered_503_and_nothing_is_accepted(
    client: TestClient[Any, Any], commands: FakeOrderCommands
) -> None:
    commands.down = True
    response = await client.post("/v1/orders", json=order(), headers=bearer(WEBSHOP_KEY))
    assert response.status == 503 and response.headers["Retry-After"] == "1"


async def test_a_cancel_names_the_order_and_the_keys_channel(
    client: TestClient[Any, Any], commands: FakeOrderCommands
) -> None:
    order_id = order_id_for("webshop", "web-2001")
    response = await client.post(
        f"/v1/orders/{order_id}/cancel",
        json={"lines": [{"sku": "MUG", "quantity": 1}], "reason": "changed my mind"},
        headers=bearer(WEBSHOP_KEY, **{"Idempotency-Key": "cx-1"}),
    )
    assert response.status == 202
    assert await response.json() == {"order_id": str(order_id), "request_id": "cx-1"}
    [request] = commands.cancels
    assert (request.order_id, request.channel, request.request_id, request.reason) == (
        order_id,
        "webshop",
        "cx-1",
        "changed my mind",
    )
    assert request.lines is not None and [(line.sku, line.quantity) for line in request.lines] == [("MUG", 1)]


async def test_a_cancel_needs_a_request_id_a_uuid_and_a_channel_the_key_acts_for(
    client: TestClient[Any, Any], commands: FakeOrderCommands, clock: Clock
) -> None:
    order_id = order_id_for("webshop", "web-2002")
    path = f"/v1/orders/{order_id}/cancel"

    async def status(body: object, key: str = WEBSHOP_KEY, to: str = path, **headers: str) -> int:
        clock.now += 10  # a fresh bucket each time: this test is about the checks, not the rate
        response = await client.post(to, json=body, headers=bearer(key, **headers))
        return response.status

    assert await status({}) == 422  # no request id
    assert await status({}, to="/v1/orders/not-a-uuid/cancel") == 400
    assert await status({"request_id": "cx-2"}, TWO_CHANNEL_KEY) == 422  # which of its channels?
    assert await status({"request_id": "cx-2", "channel": "marketplace"}) == 403
    assert await status({"request_id": "cx-2"}, **{"Idempotency-Key": "cx-3"}) == 422
    assert await status({}, **{"Idempotency-Key": "x" * 300}) == 422
    assert commands.cancels == []


async def test_an_edit_names_the_order_and_the_keys_channel_and_carries_what_changes(
    client: TestClient[Any, Any], commands: FakeOrderCommands
) -> None:
    order_id = order_id_for("webshop", "web-2003")
    address = order()["shipping_address"] | {"line1": "Neue Strasse 2"}
    lines = [{"sku": "MUG", "quantity": 2, "unit_price": "10.00"}]
    payment = {"status": "authorized", "reference": "pay-9", "amount": "20.00"}
    response = await client.post(
        f"/v1/orders/{order_id}/edit",
        json={"request_id": "ed-1", "shipping_address": address, "lines": lines, "payment": payment},
        headers=bearer(WEBSHOP_KEY),
    )
    assert response.status == 202
    assert await response.json() == {"order_id": str(order_id), "request_id": "ed-1"}
    [request] = commands.edits
    assert (request.order_id, request.channel, request.request_id) == (order_id, "webshop", "ed-1")
    assert request.shipping_address is not None and request.shipping_address.line1 == "Neue Strasse 2"
    assert request.lines is not None and [(x.sku, x.quantity) for x in request.lines] == [("MUG", 2)]
    assert request.payment is not None and request.payment.reference == "pay-9"


async def test_an_edit_that_changes_nothing_or_cannot_be_taken_is_refused_and_nothing_is_produced(
    client: TestClient[Any, Any], commands: FakeOrderCommands, clock: Clock
) -> None:
    order_id = order_id_for("webshop", "web-2004")
    path = f"/v1/orders/{order_id}/edit"
    address = order()["shipping_address"]

    async def status(body: object, key: str = WEBSHOP_KEY, to: str = path, **headers: str) -> int:
        clock.now += 10  # a fresh bucket each time: this test is about the checks, not the rate
        response = await client.post(to, json=body, headers=bearer(key, **headers))
        return response.status

    assert await status({"request_id": "ed-2"}) == 422  # neither address nor lines
    assert await status({"shipping_address": address}) == 422  # no request id
    assert await status({"request_id": "ed-2", "lines": []}) == 422  # lines, but none
    assert await status({"request_id": "ed-2", "shipping_address": address}, to="/v1/orders/x/edit") == 400
    assert await status({"request_id": "ed-2", "shipping_address": address}, TWO_CHANNEL_KEY) == 422
    assert await status({"request_id": "ed-2", "shipping_address": address, "channel": "marketplace"}) == 403
    assert commands.edits == []


async def test_the_document_and_health_need_no_key(client: TestClient[Any, Any]) -> None:
    for path in ("/openapi.json", "/livez", "/readyz"):
        assert (await client.get(path)).status == 200


def test_a_revoked_key_id_never_becomes_active_again() -> None:
    ring = KeyRing()
    ring.add("key_1", digest("baton_one"), frozenset({"webshop"}))
    assert ring.find(digest("baton_one")) == ApiKey("key_1", frozenset({"webshop"}))
    ring.revoke("key_1")
    ring.add("key_1", digest("baton_one"), frozenset({"webshop"}))
    assert ring.find(digest("baton_one")) is None and len(ring) == 0


def test_a_key_reads_with_star_but_submits_only_for_the_channels_it_names() -> None:
    support = ApiKey("key_all", frozenset({"*"}))
    shop = ApiKey("key_web", frozenset({"webshop"}))
    assert support.may_read("webshop") and not support.may_submit("webshop")
    assert shop.may_read("webshop") and shop.may_submit("webshop") and not shop.may_submit("marketplace")
