"""Stage deadlines end to end: a shipment left in a stage past its `sla_hours` is reported once on
`fulfillment.sla-breaches.v1`, its order's status is re-published with a later ETA, subscribers of
`shipment.late` get a signed webhook, and `baton top` counts it. Through public topics only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import pytest

from libs.contracts import topics
from tests.e2e.conftest import SLA_CHANNEL, LiveFleet
from tests.e2e.test_notification import Receiver, signed_with, subscribe
from tests.support.infra import Infra
from tests.support.kafka_io import TopicWatcher
from tests.support.orders import adjustment, location, order, product
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e


@pytest.fixture
async def late_receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def test_a_shipment_late_in_its_stage_is_reported_once_with_a_new_eta_and_a_webhook(
    live: LiveFleet, e2e_infra: Infra, late_receiver: Receiver
) -> None:
    item = sku("SLOW")
    wh = f"wh-{item}"
    await live.seed(
        products=[product(item)],
        locations=[location(wh, lat=52.4, lon=13.1)],
        adjustments=[adjustment(f"i-{item}", item, wh, delta=3)],
    )
    secret = await subscribe(live, f"late-{item}", late_receiver.url("late"), "shipment.late")
    breaches = TopicWatcher(e2e_infra.kafka, live.prefix + topics.FULFILLMENT_SLA_BREACHES)
    await breaches.start()
    try:
        external_id = await live.submit(order(lines=[(item, 1, "10.00")], channel=SLA_CHANNEL))
        placed = await live.wait_status(external_id, "in_fulfillment")
        order_id = placed["order_id"]
        [shipment] = placed["shipments"]
        assert shipment["pipeline"] == "sla-e2e"

        def of_order(sla: str) -> list[dict[str, Any]]:
            return [r for r in breaches.records if r.get("order_id") == order_id and r.get("sla") == sla]

        await breaches.wait_for(lambda _: bool(of_order("stage")), 60, "the breach of the `new` stage")
        [breach] = of_order("stage")
        assert (breach["shipment_id"], breach["stage"], breach["sla_hours"]) == (
            shipment["shipment_id"],
            "new",
            0.001,
        )
        assert breach["overdue_seconds"] >= 0

        def republished() -> list[dict[str, object]]:
            return [
                r
                for r in live.history(external_id)
                if r["status"] == "in_fulfillment" and r["version"] > placed["version"]
            ]

        await live.status.wait_for(lambda _: bool(republished()), 60, "the status with the revised ETA")
        revised = min(republished(), key=lambda r: int(str(r["version"])))
        assert datetime.fromisoformat(str(revised["eta"])) > datetime.fromisoformat(placed["eta"])
        assert revised["eta"] == breach["eta"]

        await live.status.wait_for(
            lambda _: bool(late_receiver.events("late", order_id)), 60, "the shipment.late webhook"
        )
        request = late_receiver.received["late"][0]
        assert orjson.loads(request["body"])["type"] == "shipment.late"
        assert signed_with(request, secret)

        # Moving on to a stage without a deadline reports nothing more for the stage; the parcel
        # has still not shipped when the pipeline's ship-by cut-off passes: one ship_by breach.
        await live.move(shipment["shipment_id"], "picking")
        await breaches.wait_for(lambda _: bool(of_order("ship_by")), 60, "the missed ship-by cut-off")
        [missed] = of_order("ship_by")
        assert missed["stage"] in ("new", "picking") and missed["sla_hours"] == 0.002
        await live.move(shipment["shipment_id"], "shipped")
        await live.wait_status(external_id, "shipped")
        await breaches.caught_up()
        assert (len(of_order("stage")), len(of_order("ship_by"))) == (1, 1)
    finally:
        await breaches.stop()

    top = await live.baton("top", "--iterations", "1")
    [line] = [x for x in top.stdout.splitlines() if x.startswith("late shipments (SLA breaches):")]
    assert int(line.rsplit(":", 1)[1]) >= 1
    live.fleet.assert_alive()
