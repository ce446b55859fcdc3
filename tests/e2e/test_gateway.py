"""The HTTP intake gateway on the running fleet: orders submitted over HTTP reach `allocated`, with the
id the gateway answered; refusals (401, 403, 413, 422, 429) produce nothing; a resubmission is the
same order; a cancel and an edit over HTTP are carried out for the key's channel only; a revoked key
stops working.

The gateway is `baton run gateway`, a process of its own beside the fleet's, with keys made by
`baton api-keys add` (through Kafka, as the operator) and followed by the gateway on the key topic.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import aiohttp
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from libs.contracts import topics
from libs.contracts.identity import order_id_for
from tests.e2e.conftest import LiveFleet
from tests.support.infra import Infra, free_port
from tests.support.kafka_io import TopicWatcher
from tests.support.orders import adjustment, location, order, product
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e

RATE_PER_S = 2
BURST = 20
MAX_BODY = 64 * 1024


class Gateway:
    def __init__(self, live: LiveFleet, url: str, session: aiohttp.ClientSession) -> None:
        self.live = live
        self.url = url
        self.session = session

    async def post(
        self, path: str, key: str | None, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.session.post(
            self.url + path, data=data, headers=sent | {"Content-Type": "application/json"}
        ) as response:
            answer = await response.json(content_type=None) if response.content_length != 0 else {}
            return response.status, answer, dict(response.headers)

    async def key(self, *channels: str) -> tuple[str, str]:
        """A key made by `baton api-keys add`, once the gateway has read it (until then it answers
        401, or 429 while the failed log-ins of this address are over their limit)."""
        key_id, key = await self.live.api_key(*channels, name="gateway e2e")
        await self.until(key, lambda status: status == 422, f"the gateway to know {key_id}")
        return key_id, key

    async def until(self, key: str, accept: Any, what: str, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while True:
            status, _, headers = await self.post("/v1/orders", key, {})  # an empty body: never produced
            if accept(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what} (last answer {status})")
            await asyncio.sleep(float(headers.get("Retry-After", "0.3")) if status == 429 else 0.3)


@pytest.fixture(scope="module")
async def gateway(live: LiveFleet) -> AsyncIterator[Gateway]:
    port = free_port()
    label = live.fleet.start(
        "gateway",
        "gateway",
        {
            "BATON_GATEWAY_PORT": str(port),
            "BATON_GATEWAY_RATE_PER_S": str(RATE_PER_S),
            "BATON_GATEWAY_BURST": str(BURST),
            "BATON_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY),
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 90
            while True:
                try:
                    async with session.get(url + "/readyz") as ready:
                        if ready.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                live.fleet.assert_alive()
                assert time.monotonic() < deadline, f"gateway never ready:\n{live.fleet.log(label)[-3000:]}"
                await asyncio.sleep(0.3)
            yield Gateway(live, url, session)
    finally:
        assert live.fleet.terminate(label) == 0, live.fleet.log(label)[-3000:]


def same_partition(channel: str, external_id: str, other: dict[str, Any]) -> bool:
    """Whether two orders' records land on one partition of `orders.submitted.v1` (the producer's
    default partitioner: murmur2 of the key), where intake reads them in order."""
    partitions = next(t.partitions for t in topics.TOPICS if t.name == topics.ORDERS_SUBMITTED)

    def partition(key: str) -> int:
        return int(DefaultPartitioner()(key.encode(), list(range(partitions)), list(range(partitions))))

    return partition(f"{channel}:{external_id}") == partition(f"{other['channel']}:{other['external_id']}")


def channel_name() -> str:
    return f"gw-{secrets.token_hex(3)}"


async def stocked(live: LiveFleet, units: int = 10) -> str:
    item = sku("GW")
    wh = f"wh-{item}"
    await live.seed(
        products=[product(item, "12.50")],
        locations=[location(wh, lat=52.5, lon=13.4)],
        adjustments=[adjustment(f"init-{item}", item, wh, delta=units)],
    )
    return item


async def test_an_order_submitted_over_http_is_allocated_under_the_id_the_gateway_answered(
    live: LiveFleet, gateway: Gateway
) -> None:
    channel = channel_name()
    item = await stocked(live)
    _, key = await gateway.key(channel)
    body = order(channel=channel, lines=[(item, 2, "12.50")])
    channel_key = f"{channel}:{body['external_id']}"

    status, answer, _ = await gateway.post("/v1/orders", key, body, {"Idempotency-Key": channel_key})

    assert status == 202
    assert UUID(answer["order_id"]) == order_id_for(channel, body["external_id"])
    allocated = await live.wait_status(body["external_id"], "allocated")
    assert allocated["order_id"] == answer["order_id"] and allocated["channel"] == channel
    assert [e["status"] for e in live.history(body["external_id"])][:3] == [
        "received",
        "validated",
        "allocated",
    ]

    again, repeated, _ = await gateway.post("/v1/orders", key, body, {"Idempotency-Key": channel_key})
    assert (again, repeated["order_id"]) == (202, answer["order_id"])
    # Intake records the resubmission as a retry, never a second order: nothing is refused and the
    # order is reserved once. A later order on the same partition shows intake has read it.
    marker = order(channel=channel, lines=[(item, 1, "12.50")])
    marker["external_id"] = next(
        e for e in (f"{marker['external_id']}-{i}" for i in range(1000)) if same_partition(channel, e, body)
    )
    assert (await gateway.post("/v1/orders", key, marker))[0] == 202
    await live.wait_status(marker["external_id"], "allocated")
    assert [e["status"] for e in live.history(body["external_id"])].count("received") == 1
    assert not [r for r in live.refused.records if r.get("external_id") == body["external_id"]]
    assert await live.fetchval("SELECT reserved FROM allocation.stock WHERE sku = $1", item) == 3


async def test_refused_requests_produce_nothing(live: LiveFleet, gateway: Gateway) -> None:
    channel, other = channel_name(), channel_name()
    item = await stocked(live)
    _, key = await gateway.key(channel)

    bad = order(channel=channel, lines=[(item, 1, "12.50")])
    del bad["customer"]
    bad["lines"][0]["quantity"] = "two"
    status, answer, _ = await gateway.post("/v1/orders", key, bad)
    assert status == 422
    assert {("customer",), ("lines", 0, "quantity")} <= {tuple(f["loc"]) for f in answer["fields"]}

    huge = order(channel=channel, lines=[(f"{item}-{i}-{'x' * 80}", 1, "12.50") for i in range(600)])
    assert len(orjson.dumps(huge)) > MAX_BODY
    assert (await gateway.post("/v1/orders", key, huge))[0] == 413

    foreign = order(channel=other, lines=[(item, 1, "12.50")])
    assert (await gateway.post("/v1/orders", key, foreign))[0] == 403

    nobody = order(channel=channel, lines=[(item, 1, "12.50")])
    status, _, headers = await gateway.post("/v1/orders", None, nobody)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert (await gateway.post("/v1/orders", "baton_not-a-key", nobody))[0] in (401, 429)

    # Then a good order of the same channel, and nothing of the refused ones ever reached intake.
    good = order(channel=channel, lines=[(item, 1, "12.50")])
    assert (await gateway.post("/v1/orders", key, good))[0] == 202
    await live.wait_status(good["external_id"], "allocated")
    refused_ids = {bad["external_id"], huge["external_id"], foreign["external_id"], nobody["external_id"]}
    assert not [r for r in live.status.records if r.get("external_id") in refused_ids]


async def test_a_key_over_its_rate_is_answered_429_with_retry_after(
    live: LiveFleet, gateway: Gateway
) -> None:
    _, key = await gateway.key(channel_name())
    answers = await asyncio.gather(*(gateway.post("/v1/orders", key, {}) for _ in range(3 * BURST)))
    statuses = [status for status, _, _ in answers]
    assert statuses.count(429) >= BURST  # 60 requests at once: a burst of 20, then 2 a second
    assert set(statuses) == {422, 429}
    assert all(int(h["Retry-After"]) >= 1 for s, _, h in answers if s == 429)


async def test_a_cancel_over_http_cancels_the_keys_own_order_and_no_other_channels(
    live: LiveFleet, gateway: Gateway
) -> None:
    channel, other = channel_name(), channel_name()
    item = await stocked(live)
    _, key = await gateway.key(channel)
    _, other_key = await gateway.key(other)
    body = order(channel=channel, lines=[(item, 2, "12.50")])
    status, answer, _ = await gateway.post("/v1/orders", key, body)
    assert status == 202
    await live.wait_status(body["external_id"], "allocated")
    order_id = answer["order_id"]

    status, _, _ = await gateway.post(
        f"/v1/orders/{order_id}/cancel", other_key, {"request_id": "gw-cx-foreign"}
    )
    assert status == 202  # the gateway cannot know the order's channel; intake refuses it
    refused = await wait_outcome(live, "gw-cx-foreign")
    assert (refused["outcome"], [r["code"] for r in refused["reasons"]]) == ("refused", ["unknown_order"])

    status, accepted, _ = await gateway.post(
        f"/v1/orders/{order_id}/cancel", key, {"reason": "customer asked"}, {"Idempotency-Key": "gw-cx-own"}
    )
    assert (status, accepted) == (202, {"order_id": order_id, "request_id": "gw-cx-own"})
    assert (await wait_outcome(live, "gw-cx-own"))["outcome"] == "accepted"
    await live.wait_status(body["external_id"], "cancelled")
    assert await live.fetchval("SELECT reserved FROM allocation.stock WHERE sku = $1", item) == 0


async def wait_outcome(live: LiveFleet, request_id: str) -> dict[str, Any]:
    await live.cancellations.wait_for(
        lambda rs: any(r.get("request_id") == request_id for r in rs), 60, f"the outcome of {request_id}"
    )
    return next(r for r in live.cancellations.records if r.get("request_id") == request_id)


async def test_an_edit_over_http_changes_the_keys_own_order_and_no_other_channels(
    live: LiveFleet, gateway: Gateway, e2e_infra: Infra
) -> None:
    edits = TopicWatcher(e2e_infra.kafka, live.prefix + topics.ORDERS_EDITS)
    await edits.start()
    try:
        channel, other = channel_name(), channel_name()
        item = await stocked(live)
        _, key = await gateway.key(channel)
        _, other_key = await gateway.key(other)
        body = order(channel=channel, lines=[(item, 1, "12.50")])
        status, answer, _ = await gateway.post("/v1/orders", key, body)
        assert status == 202
        await live.wait_status(body["external_id"], "in_fulfillment")
        order_id = answer["order_id"]
        moved = body["shipping_address"] | {"line1": "Neue Strasse 2"}

        async def outcome(request_id: str) -> dict[str, Any]:
            await edits.wait_for(
                lambda rs: any(r.get("request_id") == request_id for r in rs),
                90,
                f"the outcome of {request_id}",
            )
            return next(r for r in edits.records if r.get("request_id") == request_id)

        status, _, _ = await gateway.post(
            f"/v1/orders/{order_id}/edit",
            other_key,
            {"request_id": "gw-ed-foreign", "shipping_address": moved},
        )
        assert status == 202  # the gateway cannot know the order's channel; intake refuses it
        refused = await outcome("gw-ed-foreign")
        assert (refused["outcome"], [r["code"] for r in refused["reasons"]]) == ("refused", ["unknown_order"])

        status, accepted, _ = await gateway.post(
            f"/v1/orders/{order_id}/edit", key, {"shipping_address": moved}, {"Idempotency-Key": "gw-ed-own"}
        )
        assert (status, accepted) == (202, {"order_id": order_id, "request_id": "gw-ed-own"})
        told = await outcome("gw-ed-own")
        assert (
            told["outcome"] == "accepted" and told["order"]["shipping_address"]["line1"] == "Neue Strasse 2"
        )
    finally:
        await edits.stop()


async def test_a_revoked_key_is_refused_by_the_gateway(live: LiveFleet, gateway: Gateway) -> None:
    key_id, key = await gateway.key(channel_name())
    await live.baton("api-keys", "revoke", key_id)
    assert await gateway.until(key, lambda status: status == 401, f"{key_id} to be refused") == 401
