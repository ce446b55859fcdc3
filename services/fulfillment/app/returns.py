"""Fulfillment's return use cases: decide a return request, apply a received return.

Fulfillment knows what was delivered and when, so it decides returns; allocation restocks what
comes back resellable (``ReturnArrived``), intake publishes the order's new status
(``OrderReturned``), and payments gets the refund on its public hand-off topic.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from libs.contracts.envelope import Event
from libs.contracts.lifecycle import OrderAllocated
from libs.contracts.orders import Reason, ShipmentLine
from libs.contracts.refunds import RefundLine, RefundRequested
from libs.contracts.returns import (
    OrderReturned,
    ReceivedLine,
    ReturnArrived,
    ReturnLine,
    ReturnReceived,
    ReturnRequested,
    ReturnStatusChanged,
)
from libs.contracts.vocabulary import ReturnCondition, ReturnStatus
from libs.platform import metrics
from libs.platform.records import Rejected
from libs.policy.channels import Returns as ReturnsPolicy
from services.fulfillment.app.ports import FulfillmentUnit
from services.fulfillment.domain import returns as rules
from services.fulfillment.domain.pipelines import PipelineConfig, Refusal
from services.fulfillment.domain.shipments import Lines

ReturnsPolicyOf = Callable[[str], ReturnsPolicy]
"""The returns policy of a channel (window, shipping refund): the channel's, or the defaults."""


def terms_of(fact: OrderAllocated) -> rules.Terms:
    order = fact.order
    return rules.Terms(
        fact.order_id,
        order.currency,
        order.payment.reference,
        rules.prices_of((line.sku, line.unit_price) for line in order.lines),
        order.shipping_price,
    )


def _lines(lines: Lines) -> list[ShipmentLine]:
    return [ShipmentLine(sku=sku, quantity=q) for sku, q in sorted(lines.items()) if q > 0]


def _return_lines(lines: Lines) -> list[ReturnLine]:
    return [ReturnLine(sku=sku, quantity=q) for sku, q in sorted(lines.items()) if q > 0]


def _received(ret: rules.Return) -> list[ReceivedLine]:
    return [
        ReceivedLine(sku=r.sku, quantity=r.quantity, condition=ReturnCondition(r.condition.value))
        for r in ret.received
    ]


def decided(ret: rules.Return, **received: Any) -> ReturnStatusChanged:
    """The return's public status; once received, ``received`` adds where, what and the refund."""
    metrics.count(metrics.RETURNS, ret.state.value)
    return ReturnStatusChanged(
        return_id=ret.return_id,
        order_id=ret.order_id,
        status=ReturnStatus(ret.state.value),
        lines=_return_lines(ret.lines),
        reasons=[] if ret.refusal is None else [Reason(code=ret.refusal.code, message=ret.refusal.message)],
        **received,
    )


async def request_return(
    request: ReturnRequested, uow: FulfillmentUnit, config: PipelineConfig, policy: ReturnsPolicyOf
) -> list[Event]:
    """Authorize or refuse the return, once per return id (a repeat changes nothing, whatever it says)."""
    if await uow.returns.get(request.return_id) is not None:
        return []
    order = (await uow.orders.lock([request.order_id])).get(request.order_id)
    shipments = await uow.shipments.of_orders([request.order_id]) if order is not None else []
    others = await uow.returns.of_order(request.order_id)
    ret = rules.decide_return(
        request.return_id,
        order,
        shipments,
        others,
        [(line.sku, line.quantity) for line in request.lines],
        order_id=request.order_id,
        window_days=policy(order.channel).window_days if order is not None else 0,
        now=datetime.now(UTC),
        config=config,
    )
    if not await uow.returns.add(ret):
        return []
    return [decided(ret)]


async def receive_return(
    received: ReturnReceived, uow: FulfillmentUnit, config: PipelineConfig, policy: ReturnsPolicyOf
) -> list[Event]:
    """Apply what a warehouse received for an authorized return, once: the return's status with its
    refund, the refund hand-off to payments, the restock and write-off for allocation, the order's
    status for intake. A receipt for a return never authorized is dead-lettered with its cause."""
    found = await uow.returns.get(received.return_id)
    if found is None:
        raise Rejected("unknown_return", f"no return {received.return_id} was ever requested")
    order = (await uow.orders.lock([found.order_id]))[found.order_id]
    siblings = await uow.returns.of_order(found.order_id)
    ret = next(r for r in siblings if r.return_id == received.return_id)
    if ret.state is rules.ReturnState.RECEIVED:
        return []
    terms = await uow.terms.of(ret.order_id)
    if terms is None:
        raise Rejected("unknown_terms", f"fulfillment kept no prices for order {ret.order_id}")
    outcome = rules.receive_return(
        ret,
        received.location_id,
        [
            rules.ReceivedLine(line.sku, line.quantity, rules.Condition(line.condition.value))
            for line in received.lines
        ],
        [r for r in siblings if r.return_id != ret.return_id],
        await uow.shipments.of_orders([ret.order_id]),
        terms,
        refund_shipping=policy(order.channel).refund_shipping,
        config=config,
    )
    if isinstance(outcome, Refusal):
        raise Rejected(outcome.code, outcome.message)
    await uow.returns.save(outcome.ret)
    for condition, lines in (("resellable", outcome.restock), ("damaged", outcome.write_off)):
        if units := sum(lines.values()):
            metrics.count(metrics.RETURNED_UNITS, condition, amount=units)
    refund = outcome.refund
    status = decided(
        outcome.ret,
        location_id=received.location_id,
        received=_received(outcome.ret),
        refund=refund.amount,
        currency=terms.currency,
    )
    return [
        status,
        RefundRequested(
            refund_id=f"return:{ret.return_id}",
            order_id=ret.order_id,
            return_id=ret.return_id,
            payment_reference=terms.payment_reference,
            currency=terms.currency,
            lines=[
                RefundLine(sku=sku, quantity=q, unit_price=price, amount=amount)
                for sku, q, price, amount in refund.lines
            ],
            shipping=refund.shipping,
            amount=refund.amount,
        ),
        ReturnArrived(
            order_id=ret.order_id,
            return_id=ret.return_id,
            location_id=received.location_id,
            restock=_lines(outcome.restock),
            write_off=_lines(outcome.write_off),
        ),
        OrderReturned(
            order_id=ret.order_id,
            status="returned" if outcome.status == "returned" else "partially_returned",
            return_id=ret.return_id,
            lines=_lines(rules.units_of(outcome.ret.received)),
        ),
    ]
