"""Returns (RMA) end to end, through public topics only: a delivered order's return is authorized,
received with a condition per line, refunded through the payments hand-off, restocked (waking a
backorder) and the order becomes `returned`; refusals say why; a redelivered receipt refunds nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from libs.contracts import topics
from tests.e2e.conftest import LiveFleet
from tests.support.infra import Infra
from tests.support.kafka_io import TopicWatcher
from tests.support.orders import adjustment, location, order, product
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def watching(infra: Infra, live: LiveFleet, *names: str) -> AsyncIterator[list[TopicWatcher]]:
    watchers = [TopicWatcher(infra.kafka, live.prefix + name) for name in names]
    try:
        for w in watchers:
            await w.start()
        yield watchers
    finally:
        for w in watchers:
            await w.stop()


def of_return(watcher: TopicWatcher, return_id: str, status: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in watcher.records
        if r.get("return_id") == return_id and (status is None or r.get("status") == status)
    ]


async def test_a_delivered_order_is_returned_refunded_and_restocked_once(
    live: LiveFleet, e2e_infra: Infra
) -> None:
    item = sku("SHOE")
    wh = f"wh-{item}"
    await live.seed(
        products=[product(item, price="10.00")],
        locations=[location(wh, lat=52.4, lon=13.1)],
        adjustments=[adjustment(f"i-{item}", item, wh, delta=2)],
    )
    async with watching(e2e_infra, live, topics.RETURNS_STATUS, topics.PAYMENTS_REFUND_REQUESTED) as (
        returns,
        refunds,
    ):
        first = order(lines=[(item, 2, "10.00")], shipping_price="4.90")
        external_id = await live.submit(first)
        placed = await live.wait_status(external_id, "in_fulfillment")
        order_id = placed["order_id"]
        [shipment] = placed["shipments"]
        await live.move(shipment["shipment_id"], "delivered", carrier="DHL", tracking_number="JD0002")
        await live.wait_status(external_id, "delivered")

        waiting = await live.submit(order(lines=[(item, 1, "10.00")]))
        backordered = await live.wait_status(waiting, "backordered")

        async def ask(return_id: str, for_order: str, quantity: int) -> None:
            await live.publisher.send(
                topics.RETURNS_REQUESTED,
                for_order,
                {
                    "return_id": return_id,
                    "order_id": for_order,
                    "lines": [{"sku": item, "quantity": quantity}],
                    "reason": "too small",
                },
            )

        rma, too_many, early = f"rma-{item}", f"rma-{item}-b", f"rma-{item}-c"
        await ask(rma, order_id, 2)
        await returns.wait_for(lambda _: bool(of_return(returns, rma)), 60, f"{rma} decided")
        [authorized] = of_return(returns, rma)
        assert authorized["status"] == "authorized", authorized
        await ask(too_many, order_id, 1)  # both delivered units are on the first return already
        await ask(early, backordered["order_id"], 1)
        await ask(rma, order_id, 1)  # a repeat: decided already, changes nothing
        await returns.wait_for(
            lambda _: bool(of_return(returns, too_many) and of_return(returns, early)), 60, "refusals"
        )
        assert [r["code"] for r in of_return(returns, too_many)[0]["reasons"]] == ["not_returnable"]
        assert [r["code"] for r in of_return(returns, early)[0]["reasons"]] == ["not_delivered"]

        receipt = {
            "return_id": rma,
            "location_id": wh,
            "lines": [
                {"sku": item, "quantity": 1, "condition": "resellable"},
                {"sku": item, "quantity": 1, "condition": "damaged"},
            ],
        }
        await live.publisher.send(topics.RETURNS_RECEIVED, rma, receipt)
        await returns.wait_for(lambda _: bool(of_return(returns, rma, "received")), 60, f"{rma} received")
        [received] = of_return(returns, rma, "received")
        assert (received["refund"], received["currency"], received["location_id"]) == ("20.00", "EUR", wh)
        returned = await live.wait_status(external_id, "returned")
        assert returned["version"] > placed["version"]

        await refunds.wait_for(lambda rs: any(r.get("return_id") == rma for r in rs), 60, "the refund")
        # The one resellable unit went back on hand at the warehouse: the backorder gets it.
        await live.wait_status(waiting, "allocated")

        # The receipt again, then a receipt of a return never requested on the same key: once that
        # is dead-lettered, the repeat before it has been handled.
        await live.publisher.send(topics.RETURNS_RECEIVED, rma, receipt)
        await live.publisher.send(topics.RETURNS_RECEIVED, rma, receipt | {"return_id": f"{rma}-never"})
        never = f"{rma}-never"

        def dead_lettered(letters: list[Any]) -> bool:
            return any(
                dict(r.headers).get("dlq-cause") == b"unknown_return"
                and orjson.loads(r.value).get("return_id") == never
                for r in letters
            )

        await live.fulfillment_dead_letters.wait_for(
            lambda _: dead_lettered(live.fulfillment_dead_letters.raw), 60, "the unknown return dead-lettered"
        )
        await refunds.caught_up()
        [refund] = [r for r in refunds.records if r.get("return_id") == rma]
        assert refund["refund_id"] == f"return:{rma}"
        assert refund["payment_reference"] == first["payment"]["reference"]
        assert [(x["sku"], x["quantity"], x["unit_price"], x["amount"]) for x in refund["lines"]] == [
            (item, 2, "10.00", "20.00")
        ]
        assert (refund["shipping"], refund["amount"]) == ("0", "20.00")  # webshop keeps shipping
        assert len(of_return(returns, rma, "received")) == 1

    def subjects() -> list[str]:
        return [str(m["Subject"]) for m in live.mailbox.messages if external_id in str(m["Subject"])]

    deadline = time.monotonic() + 60
    while sum("return" in s for s in subjects()) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert any(s.startswith(f"Your return {rma}") and "authorized" in s for s in subjects())
    assert any(s.startswith(f"Your refund for return {rma}") for s in subjects())
    live.fleet.assert_alive()
