"""Intake and pending payments: payment events passed on once, `awaiting_payment`, and a
cancellation Baton decided itself publishing no cancellation outcome."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderCancelled,
    OrderPaymentChanged,
    OrderReserved,
    OrderValidated,
)
from libs.contracts.orders import OrderDetails, OrderStatusChanged, Reason
from libs.contracts.payments import PaymentUpdate
from libs.platform.records import Rejected
from services.intake.app.use_cases import pass_payment_on, publish_statuses
from tests.support.orders import order
from tests.unit.fakes.intake import FakeIntakeUnit
from tests.unit.test_intake_use_cases import applied, received_order

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def update(event_id: str, status: str = "authorized", **names: object) -> PaymentUpdate:
    return PaymentUpdate.model_validate(
        {"payment_event_id": event_id, "status": status, "occurred_at": AT.isoformat()}
        | (names or {"channel": "webshop", "external_id": "ext-1"})
    )


async def test_a_payment_event_is_passed_on_to_allocation_once_per_payment_event_id() -> None:
    uow = FakeIntakeUnit()
    order_id = await received_order(uow)
    [fact] = await pass_payment_on(update("evt-1"), uow)
    assert isinstance(fact, OrderPaymentChanged)
    assert (fact.order_id, fact.status, fact.payment_event_id) == (order_id, "authorized", "evt-1")
    assert await pass_payment_on(update("evt-1"), uow) == []
    [by_id] = await pass_payment_on(update("evt-2", "captured", order_id=str(order_id)), uow)
    assert isinstance(by_id, OrderPaymentChanged) and by_id.status == "captured"


async def test_a_payment_event_for_no_known_order_is_rejected_for_replay() -> None:
    with pytest.raises(Rejected) as rejected:
        await pass_payment_on(update("evt-9", channel="webshop", external_id="nobody"), FakeIntakeUnit())
    assert rejected.value.cause == "unknown_order"


async def test_a_reserved_order_awaits_payment_then_is_allocated_or_cancelled_for_timeout() -> None:
    uow = FakeIntakeUnit()
    order_id = await received_order(uow)
    details = OrderDetails.model_validate(order("ext-1", payment_status="pending"))
    await publish_statuses([OrderValidated(order_id=order_id, order=details)], uow)
    reserved = OrderReserved(order_id=order_id, shipments=[], expires_at=AT)
    [[waiting]] = applied(await publish_statuses([reserved], uow))
    assert isinstance(waiting, OrderStatusChanged) and waiting.status == "awaiting_payment"
    assert waiting.reasons[0].code == "awaiting_payment"
    timeout = Reason(code="payment_timeout", message="the payment was not authorized in time")
    [events] = applied(
        await publish_statuses([OrderCancelled(order_id=order_id, request_id="", reasons=[timeout])], uow)
    )
    assert [type(e) for e in events] == [OrderStatusChanged], "no cancel request, no cancellation outcome"
    assert uow.statuses(order_id) == ["received", "validated", "awaiting_payment", "cancelled"]


async def test_an_order_awaiting_payment_moves_to_allocated_when_paid() -> None:
    uow = FakeIntakeUnit()
    order_id = await received_order(uow)
    details = OrderDetails.model_validate(order("ext-1", payment_status="pending"))
    await publish_statuses([OrderValidated(order_id=order_id, order=details)], uow)
    await publish_statuses([OrderReserved(order_id=order_id, shipments=[], expires_at=AT)], uow)
    await publish_statuses([OrderAllocated(order_id=order_id, shipments=[], order=details)], uow)
    assert uow.statuses(order_id)[-2:] == ["awaiting_payment", "allocated"]
