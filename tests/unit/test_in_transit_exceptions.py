"""A parcel lost, damaged or returned to sender after it shipped: fulfillment takes it out of its
pipeline; by the channel's policy allocation sources it again or payments refunds it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from libs.contracts.fulfillment import FulfillmentUpdate, StageChanged
from libs.contracts.lifecycle import OrderAllocated, OrderBackordered, ShipmentLost
from libs.contracts.orders import OrderDetails, Shipment, ShipmentLine
from libs.contracts.refunds import RefundRequested
from libs.contracts.vocabulary import OrderStatus
from libs.platform.messaging import Rejected
from services.allocation.app.use_cases import allocate_orders, lose_shipment, ship_shipment
from services.allocation.domain.allocations import AllocationStatus
from services.fulfillment.app.use_cases import apply_updates, load_pipelines, receive_allocations
from services.intake.domain.orders import as_seen_by_customer
from tests.support.orders import order, stage_update
from tests.unit.fakes.fulfillment import FakeFulfillmentUnit
from tests.unit.test_allocation_use_cases import RULES, allocated, shipped, units, validated, with_stock

pytestmark = pytest.mark.unit

CONFIG = load_pipelines()


def update(shipment_id: str, stage: str, **kwargs: Any) -> FulfillmentUpdate:
    return FulfillmentUpdate.model_validate(stage_update(shipment_id, stage, **kwargs))


def of(events: Any, kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def shipped_order(uow: FakeFulfillmentUnit, *parcels: str) -> OrderAllocated:
    fact = OrderAllocated(
        order_id=uuid4(),
        order=OrderDetails.model_validate(order(lines=[("SKU-1", len(parcels), "12.50")])),
        shipments=[
            Shipment(shipment_id=p, location_id="wh", lines=[ShipmentLine(sku="SKU-1", quantity=1)])
            for p in parcels
        ],
    )
    await receive_allocations([fact], uow, CONFIG)
    await apply_updates([update(p, "shipped") for p in parcels], uow, CONFIG)
    return fact


def test_the_exception_stage_and_its_reason_go_together() -> None:
    with pytest.raises(ValidationError, match="go together"):
        update("s1", "exception")
    with pytest.raises(ValidationError, match="go together"):
        update("s1", "shipped", exception="lost")
    with pytest.raises(ValidationError):
        update("s1", "exception", exception="eaten")


async def test_a_lost_parcel_leaves_its_pipeline_and_is_sent_to_allocation_to_be_shipped_again() -> None:
    uow = FakeFulfillmentUnit()
    fact = await shipped_order(uow, "s1")
    [events] = await apply_updates([update("s1", "exception", exception="lost")], uow, CONFIG)
    assert not isinstance(events, Rejected)
    [left] = of(events, StageChanged)
    assert (left.left_stage, left.entered_stage, left.change, left.reason) == (
        "shipped",
        None,
        "left",
        "lost",
    )
    [lost] = of(events, ShipmentLost)
    assert (lost.order_id, lost.shipment_id, lost.reship, lost.lines) == (
        fact.order_id,
        "s1",
        True,
        [ShipmentLine(sku="SKU-1", quantity=1)],
    )
    assert of(events, RefundRequested) == []
    assert not uow.known_shipments["s1"].active
    assert uow.known_orders[fact.order_id].awaiting_resource


async def test_on_a_refunding_channel_a_damaged_parcel_is_refunded_at_the_price_paid() -> None:
    uow = FakeFulfillmentUnit()
    fact = await shipped_order(uow, "s1", "s2")
    [events] = await apply_updates(
        [update("s2", "exception", exception="damaged")], uow, CONFIG, reships=lambda channel: False
    )
    assert not isinstance(events, Rejected)
    [refund] = of(events, RefundRequested)
    assert (refund.refund_id, refund.cause, refund.shipment_id, refund.amount) == (
        "lost:s2",
        "in_transit_exception",
        "s2",
        Decimal("12.50"),
    )
    assert refund.payment_reference == fact.order.payment.reference
    [lost] = of(events, ShipmentLost)
    assert not lost.reship and not uow.known_orders[fact.order_id].awaiting_resource


async def test_a_parcel_not_yet_shipped_or_already_delivered_cannot_be_lost_in_transit() -> None:
    uow = FakeFulfillmentUnit()
    fact = OrderAllocated(
        order_id=uuid4(),
        order=OrderDetails.model_validate(order()),
        shipments=[
            Shipment(shipment_id="s1", location_id="wh", lines=[ShipmentLine(sku="SKU-1", quantity=1)])
        ],
    )
    await receive_allocations([fact], uow, CONFIG)
    [refused] = await apply_updates(
        [update("s1", "exception", exception="lost", update_id="x1")], uow, CONFIG
    )
    assert isinstance(refused, Rejected) and refused.cause == "not_in_transit"
    await apply_updates([update("s1", "delivered")], uow, CONFIG)
    [late] = await apply_updates([update("s1", "exception", exception="lost", update_id="x2")], uow, CONFIG)
    assert isinstance(late, Rejected) and late.cause == "not_in_transit"


async def test_allocation_writes_a_lost_parcel_off_once_and_sources_it_again() -> None:
    uow = await with_stock(("A", "wh", 2))
    [first] = allocated(await _one(uow))
    await ship_shipment(shipped(first, "wh"), uow)
    assert units(uow, "A", "wh") == (1, 0)
    lost = ShipmentLost(
        order_id=first.order_id,
        shipment_id=first.shipments[0].shipment_id,
        location_id="wh",
        lines=[ShipmentLine(sku="A", quantity=1)],
        exception="lost",
        reship=True,
    )
    [again] = allocated(await lose_shipment(lost, uow, RULES))
    assert [s.shipment_id for s in again.shipments if s.shipment_id != lost.shipment_id]
    assert units(uow, "A", "wh") == (1, 1)
    assert uow.state.stock[("A", "wh")].written_off == 1
    assert await lose_shipment(lost, uow, RULES) == []
    assert units(uow, "A", "wh") == (1, 1)


async def _one(uow: Any) -> Any:
    return [e for r in await allocate_orders([validated(("A", 1))], uow, RULES) for e in r]


async def test_a_lost_parcel_that_cannot_be_sourced_again_waits_for_stock_and_a_refunded_one_is_only_written_off() -> (
    None
):
    uow = await with_stock(("B", "wh", 1))
    [first] = allocated(await _b(uow))
    await ship_shipment(shipped(first, "wh"), uow)
    sid = first.shipments[0].shipment_id
    common: dict[str, Any] = {
        "order_id": first.order_id,
        "shipment_id": sid,
        "location_id": "wh",
        "exception": "lost",
    }
    waiting = await lose_shipment(
        ShipmentLost(lines=[ShipmentLine(sku="B", quantity=1)], reship=True, **common), uow, RULES
    )
    assert (
        of(waiting, OrderBackordered)
        and uow.state.orders[first.order_id].status is AllocationStatus.BACKORDERED
    )

    uow2 = await with_stock(("B", "wh", 2))
    [other] = allocated(await _b(uow2))
    await ship_shipment(shipped(other, "wh"), uow2)
    refunded = {**common, "order_id": other.order_id, "shipment_id": other.shipments[0].shipment_id}
    assert (
        await lose_shipment(
            ShipmentLost(lines=[ShipmentLine(sku="B", quantity=1)], reship=False, **refunded), uow2, RULES
        )
        == []
    )
    assert units(uow2, "B", "wh") == (1, 0) and uow2.state.stock[("B", "wh")].written_off == 1


async def _b(uow: Any) -> Any:
    return [e for r in await allocate_orders([validated(("B", 1))], uow, RULES) for e in r]


def test_a_shipped_order_stays_shipped_while_a_lost_parcel_is_replaced() -> None:
    for proposed in ("allocated", "backordered", "in_fulfillment", "partially_shipped"):
        assert as_seen_by_customer(OrderStatus.SHIPPED, OrderStatus(proposed)) is OrderStatus.SHIPPED
    assert as_seen_by_customer(OrderStatus.SHIPPED, OrderStatus.DELIVERED) is OrderStatus.DELIVERED
