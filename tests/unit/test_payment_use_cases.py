"""Pending payments in allocation on in-memory ports: reserve, wait, proceed, or release and cancel."""

from __future__ import annotations

from uuid import uuid4

import pytest

from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderBackordered,
    OrderCancelled,
    OrderCancelRefused,
    OrderCancelRequested,
    OrderPaymentChanged,
    OrderReserved,
    OrderValidated,
)
from libs.contracts.orders import OrderDetails, ShipmentLine
from libs.contracts.payments import PaymentState as Incoming
from services.allocation.app.use_cases import (
    adjust_stock,
    allocate_orders,
    apply_payment,
    expire_reservation,
    request_cancel,
)
from services.allocation.domain.allocations import AllocationStatus
from services.allocation.domain.payments import PAYMENT_DEADLINE, PaymentState
from services.allocation.domain.sourcing import Rules
from tests.support.orders import order
from tests.unit.fakes.allocation import FakeAllocationUnit
from tests.unit.test_allocation_use_cases import RULES, arrival, with_stock

pytestmark = pytest.mark.unit


def pending(*lines: tuple[str, int], payment: str = "pending") -> OrderValidated:
    details = OrderDetails.model_validate(
        order(lines=[(sku, q, "10.00") for sku, q in lines], payment_status=payment)
    )
    return OrderValidated(order_id=uuid4(), order=details)


def paid(fact: OrderValidated, status: Incoming, event: str = "evt") -> OrderPaymentChanged:
    return OrderPaymentChanged(order_id=fact.order_id, payment_event_id=event, status=status)


async def fire(uow: FakeAllocationUnit, fact: OrderValidated) -> list[object]:
    """The order's deadline timer fires (as the timer worker would: once, then it is gone)."""
    timer = uow.state.timers.scheduled.pop((PAYMENT_DEADLINE, str(fact.order_id)))
    return list(await expire_reservation(timer, uow, RULES))


def reserved_units(uow: FakeAllocationUnit, sku: str, location: str = "wh") -> int:
    return uow.state.units(sku, location).reserved


async def test_a_pending_order_reserves_its_stock_with_a_deadline_and_does_not_go_to_fulfillment() -> None:
    uow = await with_stock(("A", "wh", 2))
    fact = pending(("A", 2))
    [[caused]] = await allocate_orders([fact], uow, RULES, lambda channel: 15)
    assert isinstance(caused, OrderReserved)
    assert [line.quantity for s in caused.shipments for line in s.lines] == [2]
    assert reserved_units(uow, "A") == 2
    timer = uow.state.timers.scheduled[(PAYMENT_DEADLINE, str(fact.order_id))]
    assert timer.due_at == caused.expires_at
    assert uow.state.payments[fact.order_id].state is PaymentState.PENDING


async def test_an_authorized_order_needs_no_deadline() -> None:
    uow = await with_stock(("A", "wh", 1))
    [[caused]] = await allocate_orders([pending(("A", 1), payment="authorized")], uow, RULES)
    assert isinstance(caused, OrderAllocated)
    assert uow.state.timers.scheduled == {}


async def test_authorization_before_the_deadline_sends_the_reserved_shipments_to_fulfillment() -> None:
    uow = await with_stock(("A", "wh", 1))
    fact = pending(("A", 1))
    [[reserved]] = await allocate_orders([fact], uow, RULES)
    [allocated] = await apply_payment(paid(fact, "authorized"), uow, RULES)
    assert isinstance(allocated, OrderAllocated) and isinstance(reserved, OrderReserved)
    assert [s.shipment_id for s in allocated.shipments] == [s.shipment_id for s in reserved.shipments]
    assert uow.state.timers.scheduled == {}


async def test_the_deadline_releases_the_stock_to_the_oldest_backorder_and_cancels_with_payment_timeout() -> (
    None
):
    uow = await with_stock(("A", "wh", 1))
    fact = pending(("A", 1))
    await allocate_orders([fact], uow, RULES)
    older, newer = pending(("A", 1), payment="authorized"), pending(("A", 1), payment="authorized")
    [[b1], [b2]] = await allocate_orders([older, newer], uow, RULES)
    assert isinstance(b1, OrderBackordered) and isinstance(b2, OrderBackordered)

    cancelled, woken = await fire(uow, fact)

    assert isinstance(cancelled, OrderCancelled)
    assert [r.code for r in cancelled.reasons] == ["payment_timeout"] and cancelled.request_id == ""
    assert isinstance(woken, OrderAllocated) and woken.order_id == older.order_id
    assert uow.state.orders[fact.order_id].status is AllocationStatus.CANCELLED
    assert uow.state.orders[newer.order_id].status is AllocationStatus.BACKORDERED
    assert reserved_units(uow, "A") == 1


async def test_a_deadline_after_authorization_or_a_second_firing_changes_nothing() -> None:
    uow = await with_stock(("A", "wh", 1))
    fact = pending(("A", 1))
    await allocate_orders([fact], uow, RULES)
    timer = uow.state.timers.scheduled[(PAYMENT_DEADLINE, str(fact.order_id))]
    await apply_payment(paid(fact, "captured"), uow, RULES)
    assert await expire_reservation(timer, uow, RULES) == []
    assert reserved_units(uow, "A") == 1


async def test_a_failed_payment_cancels_at_once_and_releases_the_stock() -> None:
    uow = await with_stock(("A", "wh", 3))
    fact = pending(("A", 3))
    await allocate_orders([fact], uow, RULES)
    [cancelled] = await apply_payment(paid(fact, "failed"), uow, RULES)
    assert isinstance(cancelled, OrderCancelled)
    assert [r.code for r in cancelled.reasons] == ["payment_failed"]
    assert reserved_units(uow, "A") == 0
    assert uow.state.timers.scheduled == {}


async def test_a_payment_event_that_arrives_before_the_order_applies_when_it_arrives() -> None:
    uow = await with_stock(("A", "wh", 1))
    early, failed_early = pending(("A", 1)), pending(("A", 1))
    assert await apply_payment(paid(early, "authorized"), uow, RULES) == []
    assert await apply_payment(paid(failed_early, "failed"), uow, RULES) == []
    [[allocated], [cancelled]] = await allocate_orders([early, failed_early], uow, RULES)
    assert isinstance(allocated, OrderAllocated)
    assert isinstance(cancelled, OrderCancelled) and cancelled.reasons[0].code == "payment_failed"
    assert reserved_units(uow, "A") == 1
    assert uow.state.timers.scheduled == {}


async def test_a_pending_backorder_woken_by_stock_is_reserved_not_sent_to_fulfillment() -> None:
    uow = await with_stock(("A", "wh", 0))
    fact = pending(("A", 1))
    [[backordered]] = await allocate_orders([fact], uow, RULES)
    assert isinstance(backordered, OrderBackordered)
    [woken] = await adjust_stock(arrival("A", "wh", 1), uow, RULES)
    assert isinstance(woken, OrderReserved)
    [allocated] = await apply_payment(paid(fact, "authorized"), uow, RULES)
    assert isinstance(allocated, OrderAllocated)


async def test_cancelling_some_lines_of_a_waiting_order_gives_their_units_back_and_keeps_the_deadline() -> (
    None
):
    uow = await with_stock(("A", "wh", 3), ("B", "wh", 1))
    fact = pending(("A", 2), ("B", 1))
    [[reserved]] = await allocate_orders([fact], uow, RULES)
    assert isinstance(reserved, OrderReserved)
    waiting_for_a = pending(("A", 2))
    [[backordered]] = await allocate_orders([waiting_for_a], uow, RULES)  # 1 of A left: not enough
    assert isinstance(backordered, OrderBackordered)

    one_a = OrderCancelRequested(
        order_id=fact.order_id, request_id="r1", lines=[ShipmentLine(sku="A", quantity=1)]
    )
    [again, woken] = await request_cancel(one_a, uow, RULES)
    assert isinstance(again, OrderReserved) and again.cancel_request_id == "r1"
    assert again.expires_at == reserved.expires_at
    assert [(line.sku, line.quantity) for s in again.shipments for line in s.lines] == [("A", 1), ("B", 1)]
    assert isinstance(woken, OrderReserved) and woken.order_id == waiting_for_a.order_id  # the freed unit
    assert reserved_units(uow, "A") == 3 and reserved_units(uow, "B") == 1

    too_many = OrderCancelRequested(
        order_id=fact.order_id, request_id="r2", lines=[ShipmentLine(sku="A", quantity=2)]
    )
    [refused] = await request_cancel(too_many, uow, RULES)
    assert isinstance(refused, OrderCancelRefused) and refused.reasons[0].code == "invalid_cancel_lines"
    assert reserved_units(uow, "A") == 3

    [allocated] = await apply_payment(paid(fact, "authorized"), uow, RULES)
    assert isinstance(allocated, OrderAllocated)
    assert [(line.sku, line.quantity) for s in allocated.shipments for line in s.lines] == [
        ("A", 1),
        ("B", 1),
    ]


async def test_cancelling_every_line_of_a_waiting_order_cancels_it_whole() -> None:
    uow = await with_stock(("A", "wh", 2))
    fact = pending(("A", 2))
    await allocate_orders([fact], uow, RULES)
    every = OrderCancelRequested(
        order_id=fact.order_id, request_id="r1", lines=[ShipmentLine(sku="A", quantity=2)]
    )
    [cancelled] = await request_cancel(every, uow, RULES)
    assert isinstance(cancelled, OrderCancelled) and cancelled.request_id == "r1"
    assert reserved_units(uow, "A") == 0
    assert uow.state.timers.scheduled == {}


async def test_cancelling_a_waiting_order_whole_releases_its_stock_at_once() -> None:
    uow = await with_stock(("A", "wh", 2))
    fact = pending(("A", 2))
    await allocate_orders([fact], uow, RULES)
    [cancelled] = await request_cancel(
        OrderCancelRequested(order_id=fact.order_id, request_id="r2"), uow, RULES
    )
    assert isinstance(cancelled, OrderCancelled) and cancelled.request_id == "r2"
    assert reserved_units(uow, "A") == 0
    assert uow.state.timers.scheduled == {}


async def test_a_waiting_order_that_ships_what_is_available_is_cancelled_by_allocation_too() -> None:
    """`ship_available`, payment pending: part reserved, part backordered; fulfillment never saw it."""
    uow = await with_stock(("A", "wh", 1))
    fact = pending(("A", 1), ("B", 1))
    fact = fact.model_copy(update={"order": fact.order.model_copy(update={"channel": "marketplace"})})
    rules = Rules(ship_available=frozenset({("marketplace", True)}))
    [[reserved]] = await allocate_orders([fact], uow, rules)
    assert isinstance(reserved, OrderReserved)
    [cancelled] = await request_cancel(
        OrderCancelRequested(order_id=fact.order_id, request_id="r"), uow, rules
    )
    assert isinstance(cancelled, OrderCancelled)
    assert reserved_units(uow, "A") == 0


async def test_cancelling_every_reserved_line_of_a_waiting_order_leaves_a_backorder_that_stock_wakes() -> (
    None
):
    """`ship_available`, payment pending: A reserved, B waits; A cancelled leaves B as a backorder."""
    uow = await with_stock(("A", "wh", 1), ("B", "wh", 0))
    fact = pending(("A", 1), ("B", 1))
    fact = fact.model_copy(update={"order": fact.order.model_copy(update={"channel": "marketplace"})})
    rules = Rules(ship_available=frozenset({("marketplace", True)}))
    await allocate_orders([fact], uow, rules)
    cancel_a = OrderCancelRequested(
        order_id=fact.order_id, request_id="r1", lines=[ShipmentLine(sku="A", quantity=1)]
    )
    [backordered] = await request_cancel(cancel_a, uow, rules)
    assert isinstance(backordered, OrderBackordered) and backordered.cancel_request_id == "r1"
    assert [(r.code, r.sku) for r in backordered.reasons] == [("insufficient_stock", "B")]
    assert reserved_units(uow, "A") == 0
    assert await apply_payment(paid(fact, "authorized"), uow, rules) == []  # paid: waits for B's stock
    [allocated] = await adjust_stock(arrival("B", "wh", 1), uow, rules)
    assert isinstance(allocated, OrderAllocated) and allocated.order_id == fact.order_id
    assert [(line.sku, line.quantity) for s in allocated.shipments for line in s.lines] == [("B", 1)]
