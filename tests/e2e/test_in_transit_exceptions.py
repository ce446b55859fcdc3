"""A parcel lost or damaged after it shipped, end to end through public topics: on a re-shipping
channel a replacement is sourced and delivered; on a refunding channel payments is asked to refund."""

from __future__ import annotations

import pytest

from libs.contracts import topics
from tests.e2e.conftest import LiveFleet
from tests.support.infra import Infra
from tests.support.kafka_io import TopicWatcher
from tests.support.orders import adjustment, location, order, product
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e


async def shipped_order(live: LiveFleet, channel: str, price: str = "10.00") -> tuple[str, str, str]:
    """(external id, order id, shipment id) of a one-unit order that has shipped."""
    item = sku("FRAGILE")
    wh = f"wh-{item}"
    await live.seed(
        products=[product(item, price=price)],
        locations=[location(wh, lat=52.4, lon=13.1)],
        adjustments=[adjustment(f"i-{item}", item, wh, delta=2)],
    )
    external_id = await live.submit(order(lines=[(item, 1, price)], channel=channel))
    placed = await live.wait_status(external_id, "in_fulfillment")
    [shipment] = placed["shipments"]
    await live.move(shipment["shipment_id"], "shipped", carrier="DHL", tracking_number=f"T-{item}")
    await live.wait_status(external_id, "shipped")
    return external_id, placed["order_id"], shipment["shipment_id"]


async def test_a_parcel_lost_in_transit_is_shipped_again_and_delivered(live: LiveFleet) -> None:
    external_id, order_id, lost = await shipped_order(live, "webshop")
    await live.move(lost, "exception", exception="lost")
    await live.stages.wait_for(
        lambda _: ("standard", "shipped", None, "left") in live.stage_events(order_id),
        60,
        "the lost parcel left",
    )
    assert [
        r["reason"] for r in live.stages.records if r.get("shipment_id") == lost and r["change"] == "left"
    ] == ["lost"]

    def replacement() -> str | None:
        for r in live.history(external_id):
            ids = [s["shipment_id"] for s in r["shipments"] if s["shipment_id"] != lost]
            if r["status"] == "shipped" and ids:
                return str(ids[0])
        return None

    await live.status.wait_for(lambda _: replacement() is not None, 60, "the replacement shipment")
    new = replacement()
    assert new is not None
    await live.move(new, "delivered")
    await live.wait_status(external_id, "delivered")
    statuses = [r["status"] for r in live.history(external_id)]
    assert "allocated" not in statuses[statuses.index("shipped") :]  # the customer never saw it go back
    live.fleet.assert_alive()


async def test_on_a_refunding_channel_a_damaged_parcel_is_refunded(live: LiveFleet, e2e_infra: Infra) -> None:
    refunds = TopicWatcher(e2e_infra.kafka, live.prefix + topics.PAYMENTS_REFUND_REQUESTED)
    await refunds.start()
    try:
        external_id, order_id, damaged = await shipped_order(live, "marketplace", price="24.00")
        await live.move(damaged, "exception", exception="damaged")
        await refunds.wait_for(lambda rs: any(r.get("shipment_id") == damaged for r in rs), 60, "the refund")
        [refund] = [r for r in refunds.records if r.get("shipment_id") == damaged]
        assert (refund["order_id"], refund["refund_id"], refund["cause"], refund["amount"]) == (
            order_id,
            f"lost:{damaged}",
            "in_transit_exception",
            "24.00",
        )
    finally:
        await refunds.stop()
    # Nothing of the order will arrive: its status says so, finally, and so does its customer's e-mail.
    refunded = await live.wait_status(external_id, "refunded")
    assert [r["code"] for r in refunded["reasons"]] == ["in_transit_exception"]
    assert refunded["shipments"] == []
    subject = f"Your order {external_id} could not be delivered and is refunded"
    await live.status.wait_for(
        lambda _: any(str(m["Subject"]) == subject for m in live.mailbox.messages), 60, "the refund e-mail"
    )
    cancel = await live.cancel(order_id, f"cx-{damaged}")
    assert [r["code"] for r in cancel["reasons"]] == ["already_final"]
    live.fleet.assert_alive()
