"""Returns (RMA): the pure rules, and fulfillment's use cases on in-memory ports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from libs.contracts.envelope import Event
from libs.contracts.fulfillment import FulfillmentUpdate
from libs.contracts.lifecycle import OrderAllocated
from libs.contracts.orders import OrderDetails, Shipment, ShipmentLine
from libs.contracts.refunds import RefundRequested
from libs.contracts.returns import (
    OrderReturned,
    ReceivedLine,
    ReturnArrived,
    ReturnLine,
    ReturnReceived,
    ReturnRequested,
    ReturnStatusChanged,
)
from libs.contracts.vocabulary import ReturnCondition, ReturnStatus, ShippingMethod
from libs.platform.messaging import Rejected
from libs.policy.channels import Returns, load_policies
from services.fulfillment.app.returns import receive_return, request_return
from services.fulfillment.app.use_cases import apply_updates, load_pipelines, receive_allocations
from services.fulfillment.domain import returns as rules
from services.fulfillment.domain.pipelines import Refusal
from services.fulfillment.domain.shipments import Order
from services.fulfillment.domain.shipments import Shipment as Parcel
from tests.support.orders import order, stage_update
from tests.unit.fakes.fulfillment import FakeFulfillmentUnit

pytestmark = pytest.mark.unit

CONFIG = load_pipelines()
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ORDER = uuid4()


def delivered_order(channel: str = "webshop") -> Order:
    return Order(ORDER, channel, ShippingMethod.STANDARD, progress="delivered")


def parcel(sid: str, lines: dict[str, int], stage: str = "delivered", at: datetime = NOW) -> Parcel:
    return Parcel(sid, ORDER, "wh", "standard", stage, stage != "delivered", lines, at)


def decide(
    lines: dict[str, int],
    shipments: Sequence[Parcel] = (),
    others: Sequence[rules.Return] = (),
    *,
    order_: Order | None = None,
    window_days: int = 30,
    now: datetime = NOW,
) -> rules.Return:
    return rules.decide_return(
        "rma-1",
        order_ if order_ is not None else delivered_order(),
        shipments or [parcel("s1", {"A": 2, "B": 1})],
        others,
        list(lines.items()),
        order_id=ORDER,
        window_days=window_days,
        now=now,
        config=CONFIG,
    )


def code(ret: rules.Return) -> str | None:
    return ret.refusal.code if ret.refusal else None


# The rules


def test_a_return_of_delivered_units_within_the_window_is_authorized() -> None:
    ret = decide({"A": 1}, now=NOW + timedelta(days=29))
    assert (ret.state, ret.lines, code(ret)) == (rules.ReturnState.AUTHORIZED, {"A": 1}, None)


def test_a_return_after_the_window_is_refused() -> None:
    ret = decide({"A": 1}, now=NOW + timedelta(days=14, seconds=1), window_days=14)
    assert (ret.state, code(ret)) == (rules.ReturnState.REFUSED, "return_window_closed")


def test_the_window_starts_when_the_last_parcel_was_delivered() -> None:
    shipments = [parcel("s1", {"A": 1}, at=NOW - timedelta(days=20)), parcel("s2", {"B": 1}, at=NOW)]
    assert code(decide({"A": 1}, shipments, window_days=14, now=NOW + timedelta(days=10))) is None


def test_an_order_not_delivered_or_never_seen_cannot_be_returned() -> None:
    shipped = Order(ORDER, "webshop", ShippingMethod.STANDARD, progress="shipped")
    assert (
        code(decide({"A": 1}, [parcel("s1", {"A": 1}, stage="shipped")], order_=shipped)) == "not_delivered"
    )
    unknown = rules.decide_return(
        "rma-1", None, [], [], [("A", 1)], order_id=ORDER, window_days=30, now=NOW, config=CONFIG
    )
    assert code(unknown) == "not_delivered"


def test_no_more_units_than_delivered_and_not_on_another_return() -> None:
    assert code(decide({"A": 3})) == "not_returnable"
    assert code(decide({"C": 1})) == "not_returnable"
    assert code(decide({"A": 1, "B": 1})) is None
    earlier = rules.Return("rma-0", ORDER, rules.ReturnState.AUTHORIZED, {"A": 2})
    assert code(decide({"A": 1}, others=[earlier])) == "not_returnable"
    refused = rules.Return("rma-0", ORDER, rules.ReturnState.REFUSED, {"A": 2})
    assert code(decide({"A": 2}, others=[refused])) is None


def test_a_sku_on_several_request_lines_is_counted_once_in_total() -> None:
    ret = rules.decide_return(
        "rma-1",
        delivered_order(),
        [parcel("s1", {"A": 2})],
        [],
        [("A", 1), ("A", 2)],
        order_id=ORDER,
        window_days=30,
        now=NOW,
        config=CONFIG,
    )
    assert code(ret) == "not_returnable"


TERMS = rules.Terms(ORDER, "EUR", "pay-1", {"A": Decimal("10.00"), "B": Decimal("5.50")}, Decimal("4.90"))


def receive(
    ret: rules.Return,
    lines: Sequence[tuple[str, int, str]],
    others: Sequence[rules.Return] = (),
    *,
    refund_shipping: bool = True,
) -> rules.Received | Refusal:
    return rules.receive_return(
        ret,
        "wh-returns",
        [rules.ReceivedLine(sku, q, rules.Condition(c)) for sku, q, c in lines],
        others,
        [parcel("s1", {"A": 2, "B": 1})],
        TERMS,
        refund_shipping=refund_shipping,
        config=CONFIG,
    )


def test_received_units_are_refunded_at_the_price_paid_and_resellable_ones_restocked() -> None:
    ret = decide({"A": 2})
    outcome = receive(ret, [("A", 1, "resellable"), ("A", 1, "damaged")])
    assert isinstance(outcome, rules.Received)
    assert outcome.refund.lines == (("A", 2, Decimal("10.00"), Decimal("20.00")),)
    assert (outcome.refund.shipping, outcome.refund.amount) == (Decimal(0), Decimal("20.00"))
    assert (outcome.restock, outcome.write_off) == ({"A": 1}, {"A": 1})
    assert outcome.status == "partially_returned"
    assert outcome.ret.state is rules.ReturnState.RECEIVED


def test_the_return_that_brings_back_the_last_unit_returns_the_order_and_refunds_shipping_by_policy() -> None:
    first = receive(decide({"A": 2}), [("A", 2, "resellable")])
    assert isinstance(first, rules.Received)
    last = decide({"B": 1}, others=[first.ret])
    outcome = receive(last, [("B", 1, "resellable")], [first.ret])
    assert isinstance(outcome, rules.Received)
    assert outcome.status == "returned"
    assert (outcome.refund.shipping, outcome.refund.amount) == (Decimal("4.90"), Decimal("10.40"))
    without = receive(last, [("B", 1, "resellable")], [first.ret], refund_shipping=False)
    assert isinstance(without, rules.Received)
    assert (without.status, without.refund.amount) == ("returned", Decimal("5.50"))


def test_units_that_did_not_arrive_are_not_refunded_and_the_order_is_partially_returned() -> None:
    outcome = receive(decide({"A": 2, "B": 1}), [("A", 1, "resellable")])
    assert isinstance(outcome, rules.Received)
    assert (outcome.refund.amount, outcome.status) == (Decimal("10.00"), "partially_returned")


def test_a_receipt_of_more_than_authorized_or_of_a_refused_return_is_refused() -> None:
    assert receive(decide({"A": 1}), [("A", 2, "resellable")]) == Refusal(
        "more_than_authorized", "A: 2 received, 1 authorized"
    )
    refused = decide({"A": 9})
    outcome = receive(refused, [("A", 1, "resellable")])
    assert isinstance(outcome, Refusal) and outcome.code == "return_not_authorized"


def test_a_refund_never_pays_more_than_the_lowest_price_a_sku_was_sold_at_on_the_order() -> None:
    assert rules.prices_of([("A", Decimal("10")), ("A", Decimal("8")), ("B", Decimal("3"))]) == {
        "A": Decimal("8"),
        "B": Decimal("3"),
    }


def test_channels_have_their_own_return_window() -> None:
    policies = load_policies()
    assert policies.policy_for("marketplace").returns.window_days == 14
    assert policies.policy_for("webshop").returns == Returns(window_days=30, refund_shipping=False)


# The use cases


def policy(window_days: int = 30, refund_shipping: bool = False) -> Any:
    return lambda channel: Returns(window_days=window_days, refund_shipping=refund_shipping)


async def delivered(uow: FakeFulfillmentUnit, lines: dict[str, int], **order_kwargs: Any) -> UUID:
    details = OrderDetails.model_validate(
        order(lines=[(sku, q, "10.00") for sku, q in lines.items()], **order_kwargs)
    )
    fact = OrderAllocated(
        order_id=uuid4(),
        order=details,
        shipments=[
            Shipment(
                shipment_id=f"s-{uuid4().hex[:6]}",
                location_id="wh",
                lines=[ShipmentLine(sku=s, quantity=q) for s, q in lines.items()],
            )
        ],
    )
    await receive_allocations([fact], uow, CONFIG)
    sid = fact.shipments[0].shipment_id
    await apply_updates([FulfillmentUpdate.model_validate(stage_update(sid, "delivered"))], uow, CONFIG)
    assert uow.known_orders[fact.order_id].progress == "delivered"
    return fact.order_id


def requested(order_id: UUID, lines: dict[str, int], return_id: str = "rma-1") -> ReturnRequested:
    return ReturnRequested(
        return_id=return_id,
        order_id=order_id,
        lines=[ReturnLine(sku=s, quantity=q) for s, q in lines.items()],
        reason="too small",
    )


def arrived(lines: Sequence[tuple[str, int, str]], return_id: str = "rma-1") -> ReturnReceived:
    return ReturnReceived(
        return_id=return_id,
        location_id="wh",
        lines=[ReceivedLine(sku=s, quantity=q, condition=ReturnCondition(c)) for s, q, c in lines],
    )


def one(events: Sequence[Event], kind: type[Any]) -> Any:
    [found] = [e for e in events if isinstance(e, kind)]
    return found


async def test_a_return_is_authorized_received_refunded_and_restocked_once() -> None:
    uow = FakeFulfillmentUnit()
    order_id = await delivered(uow, {"A": 2, "B": 1}, shipping_price="4.90")
    [authorized] = await request_return(requested(order_id, {"A": 2, "B": 1}), uow, CONFIG, policy())
    assert isinstance(authorized, ReturnStatusChanged) and authorized.status is ReturnStatus.AUTHORIZED
    assert await request_return(requested(order_id, {"A": 1}), uow, CONFIG, policy()) == []

    events = await receive_return(
        arrived([("A", 2, "resellable"), ("B", 1, "damaged")]), uow, CONFIG, policy(refund_shipping=True)
    )
    status = one(events, ReturnStatusChanged)
    assert (status.status, status.refund, status.currency) == (ReturnStatus.RECEIVED, Decimal("34.90"), "EUR")
    refund = one(events, RefundRequested)
    assert refund.refund_id == "return:rma-1" and refund.payment_reference.startswith("pay-")
    assert [(x.sku, x.quantity, x.amount) for x in refund.lines] == [
        ("A", 2, Decimal("20.00")),
        ("B", 1, Decimal("10.00")),
    ]
    assert (refund.shipping, refund.amount) == (Decimal("4.90"), Decimal("34.90"))
    stock = one(events, ReturnArrived)
    assert (stock.location_id, stock.restock, stock.write_off) == (
        "wh",
        [ShipmentLine(sku="A", quantity=2)],
        [ShipmentLine(sku="B", quantity=1)],
    )
    assert one(events, OrderReturned).status == "returned"
    assert await receive_return(arrived([("A", 2, "resellable")]), uow, CONFIG, policy()) == []


async def test_a_return_of_part_of_an_order_leaves_it_partially_returned() -> None:
    uow = FakeFulfillmentUnit()
    order_id = await delivered(uow, {"A": 2})
    await request_return(requested(order_id, {"A": 1}), uow, CONFIG, policy())
    events = await receive_return(arrived([("A", 1, "resellable")]), uow, CONFIG, policy())
    assert one(events, OrderReturned).status == "partially_returned"
    assert one(events, RefundRequested).amount == Decimal("10.00")


async def test_a_refused_return_says_why_and_its_receipt_is_dead_lettered() -> None:
    uow = FakeFulfillmentUnit()
    order_id = await delivered(uow, {"A": 1})
    refused = one(
        await request_return(requested(order_id, {"A": 1}), uow, CONFIG, policy(window_days=0)),
        ReturnStatusChanged,
    )
    assert refused.status is ReturnStatus.REFUSED
    assert [r.code for r in refused.reasons] == ["return_window_closed"]
    with pytest.raises(Rejected) as rejected:
        await receive_return(arrived([("A", 1, "resellable")]), uow, CONFIG, policy())
    assert rejected.value.cause == "return_not_authorized"
    with pytest.raises(Rejected) as unknown:
        await receive_return(arrived([("A", 1, "resellable")], "rma-x"), uow, CONFIG, policy())
    assert unknown.value.cause == "unknown_return"


async def test_a_return_for_an_order_fulfillment_never_saw_is_refused() -> None:
    uow = FakeFulfillmentUnit()
    refused = one(
        await request_return(requested(uuid4(), {"A": 1}), uow, CONFIG, policy()), ReturnStatusChanged
    )
    assert [r.code for r in refused.reasons] == ["not_delivered"]
