"""Intake's use cases: record submitted orders, resolve cancel requests, and turn the facts other
services decide into the public, versioned status stream.

Each takes contract objects and a unit of work and returns the events it caused; it never sees a
topic, a header or a database connection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, assert_never
from uuid import UUID

from libs.contracts.envelope import Event, utcnow
from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderBackordered,
    OrderCancelled,
    OrderCancelRefused,
    OrderCancelRequested,
    OrderEditRefused,
    OrderEditRequested,
    OrderFulfillmentProgressed,
    OrderHeld,
    OrderPaymentChanged,
    OrderReceived,
    OrderRejected,
    OrderReserved,
    OrderValidated,
)
from libs.contracts.orders import (
    CancellationOutcome,
    CancelRequested,
    EditOutcome,
    EditRequested,
    OrderDetails,
    OrderRefused,
    OrderStatusChanged,
    OrderSubmitted,
    Reason,
    Shipment,
    ShipmentLine,
)
from libs.contracts.payments import PaymentUpdate
from libs.contracts.privacy import Erasure, ErasureRequested, customers_of, kept
from libs.contracts.returns import OrderReturned
from libs.contracts.vocabulary import OrderStatus
from libs.platform import metrics
from libs.platform.erasures import applied
from libs.platform.records import Rejected
from services.intake.app.ports import IntakeUnit, NewOrder
from services.intake.domain.orders import (
    Order,
    Submission,
    advance,
    cancel_refusal,
    classify_submissions,
    edit_refusal,
    fingerprint,
    implied_steps,
    receive,
)

log = logging.getLogger("baton.intake")

StatusFact = (
    OrderValidated
    | OrderRejected
    | OrderHeld
    | OrderAllocated
    | OrderBackordered
    | OrderCancelled
    | OrderCancelRefused
    | OrderFulfillmentProgressed
    | OrderReserved
    | OrderEditRefused
    | OrderReturned
)
STATUS_FACTS = (
    OrderValidated,
    OrderRejected,
    OrderHeld,
    OrderAllocated,
    OrderBackordered,
    OrderCancelled,
    OrderCancelRefused,
    OrderFulfillmentProgressed,
    OrderReserved,
    OrderEditRefused,
    OrderReturned,
)
"""The facts intake turns into statuses and cancellation outcomes: everything on its facts topic."""


def details_of(submitted: OrderSubmitted) -> OrderDetails:
    """The order as the channel placed it, without the envelope a channel may add: what is
    fingerprinted, stored and carried on `order.received`. Its fields are validated already."""
    return OrderDetails.model_construct(
        **{name: getattr(submitted, name) for name in OrderDetails.model_fields}
    )


ADDED_LATER = ("shipping_price", "pickup_location_id")
"""Order fields added after orders were first fingerprinted: left out of the digest while a channel
does not give them, so the retry of an order submitted before the upgrade is still a retry."""


def fingerprinted(order: OrderDetails) -> dict[str, Any]:
    """What the fingerprint is taken of: the order as placed, without later fields it does not use."""
    return order.model_dump(
        mode="json", exclude={name for name in ADDED_LATER if getattr(order, name) is None}
    )


def status_changed(
    order: Order,
    *,
    reasons: Sequence[Reason] = (),
    shipments: Sequence[Shipment] = (),
    eta: datetime | None = None,
    occurred_at: datetime | None = None,
    edited: OrderDetails | None = None,
) -> OrderStatusChanged:
    """The public event of an order's current version."""
    return OrderStatusChanged(
        order=edited,
        order_id=order.order_id,
        channel=order.channel,
        external_id=order.external_id,
        status=order.status,
        version=order.version,
        reasons=list(reasons),
        shipments=list(shipments),
        eta=eta,
        occurred_at=occurred_at or utcnow(),
    )


async def record_submissions(
    submitted: Sequence[OrderSubmitted], uow: IntakeUnit
) -> list[list[Event] | Rejected]:
    """A new channel order becomes `received` (and `order.received` goes on to validation); a retry
    changes nothing; the same channel order with different content is refused.

    The whole batch in one statement: the new orders are recorded with their first version, and
    those on file already come back with their fingerprint, which tells a retry from a conflict. A
    channel order submitted twice in one batch is recorded once; its second submission is a retry
    or a conflict of the first. An order placed before an erasure of its customer that arrives
    after it is recorded (and passed on) erased; its fingerprint is of what the channel sent, so
    a retry is still recognised.
    """
    details = [details_of(s) for s in submitted]
    erasures = await uow.erasures.covering(customers_of(details))
    firsts: dict[UUID, NewOrder] = {}
    keyed: list[tuple[UUID, str]] = []
    for order in details:
        new = receive(order.channel, order.external_id)
        digest = fingerprint(fingerprinted(order))
        keyed.append((new.order_id, digest))
        if new.order_id not in firsts:
            firsts[new.order_id] = NewOrder(kept(order, erasures), digest, status_changed(new))
    on_file = await uow.orders.add(list(firsts.values()))
    results: list[list[Event] | Rejected] = []
    for order, (order_id, _), verdict in zip(
        details, keyed, classify_submissions(keyed, on_file), strict=True
    ):
        if verdict is Submission.NEW:
            metrics.count(metrics.ORDER_STATUS, OrderStatus.RECEIVED.value)
            first = firsts[order_id]
            results.append([first.received, OrderReceived(order_id=order_id, order=first.details)])
        elif verdict is Submission.RETRY:
            results.append([])
        else:
            results.append([conflict(order, order_id)])
    return results


def conflict(order: OrderDetails, existing: UUID) -> OrderRefused:
    return OrderRefused(
        channel=order.channel,
        external_id=order.external_id,
        existing_order_id=existing,
        reasons=[
            Reason(
                code="duplicate_external_id_conflict",
                message=f"{order.channel_key} was already submitted with different content",
            )
        ],
    )


@dataclass(frozen=True)
class Proposal:
    """The status a fact proposes for its order, with what the customer is told about it."""

    status: OrderStatus
    reasons: Sequence[Reason] = ()
    shipments: Sequence[Shipment] = ()
    eta: datetime | None = None


REFUNDED_IN_TRANSIT = Reason(
    code="in_transit_exception",
    message="the carrier reported the parcels on their way lost, damaged or returned; their price is refunded",
)
AWAITING_STOCK = Reason(
    code="awaiting_stock",
    message="part of the order is being sourced again or waits for stock (a parcel failed)",
)
"""Told with a status whose shipments do not cover the whole order (those parts are in none)."""


def proposed_status(
    fact: OrderValidated
    | OrderRejected
    | OrderHeld
    | OrderAllocated
    | OrderBackordered
    | OrderCancelled
    | OrderFulfillmentProgressed
    | OrderReserved
    | OrderReturned,
) -> Proposal:
    """What each fact means to the customer. An allocation that leaves lines waiting for stock
    (a failed parcel that could not be sourced again) is a backorder, with a reason per line."""
    match fact:
        case OrderValidated():
            return Proposal(OrderStatus.VALIDATED)
        case OrderRejected(reasons=reasons):
            return Proposal(OrderStatus.REJECTED, reasons)
        case OrderHeld(reasons=reasons):
            return Proposal(OrderStatus.ON_HOLD, reasons)
        case OrderAllocated(shipments=shipments, backordered_lines=waiting) if waiting:
            reasons = [
                Reason(code="insufficient_stock", message=f"{line.quantity} waiting for stock", sku=line.sku)
                for line in waiting
            ]
            return Proposal(OrderStatus.BACKORDERED, reasons, shipments)
        case OrderAllocated(shipments=shipments):
            return Proposal(OrderStatus.ALLOCATED, (), shipments)
        case OrderBackordered(reasons=reasons):
            return Proposal(OrderStatus.BACKORDERED, reasons)
        case OrderCancelled(reasons=reasons):
            return Proposal(OrderStatus.CANCELLED, reasons)
        case OrderFulfillmentProgressed(status="refunded", shipments=shipments):
            return Proposal(OrderStatus.REFUNDED, [REFUNDED_IN_TRANSIT], shipments)
        case OrderFulfillmentProgressed(status=status, shipments=shipments, eta=eta, awaiting_stock=waiting):
            reasons = [AWAITING_STOCK] if waiting else []
            return Proposal(OrderStatus(status), reasons, shipments, eta)
        case OrderReserved(shipments=shipments, expires_at=expires_at):
            awaiting = Reason(
                code="awaiting_payment",
                message=f"stock reserved until {expires_at.isoformat()}; waiting for the payment",
            )
            return Proposal(OrderStatus.AWAITING_PAYMENT, [awaiting], shipments)
        case OrderReturned(status=status, return_id=return_id, lines=lines):
            units = ", ".join(f"{line.quantity} x {line.sku}" for line in lines)
            reason = Reason(code="returned", message=f"return {return_id} received: {units}")
            return Proposal(OrderStatus(status), [reason])
        case _:
            assert_never(fact)


def accepted_cancel(fact: StatusFact) -> str | None:
    """The cancel request a fact carries out: the order cancelled whole, or its reduced allocation.
    An order Baton cancelled itself (e.g. `payment_timeout`) carries out no request."""
    if isinstance(fact, OrderCancelled):
        return fact.request_id or None
    if isinstance(fact, OrderAllocated | OrderReserved | OrderBackordered):
        return fact.cancel_request_id or None
    return None


async def publish_statuses(facts: Sequence[StatusFact], uow: IntakeUnit) -> list[list[Event] | Rejected]:
    """Give each order its next version if the state machine allows the move; else drop the fact.

    A whole batch at once: the orders are locked in one statement, the facts applied in order in
    memory (two facts for one order in a batch see each other), and the new versions written in
    one statement. Cancellation outcomes are published here too: a cancel is accepted when the
    order becomes `cancelled` (whole) or gets its reduced allocation (partial), refused when a
    service refused it. A fact about an order intake never received is rejected (`unknown_order`),
    so it can be replayed once the order exists.
    """
    wanted = sorted({f.order_id for f in facts if not isinstance(f, OrderCancelRefused | OrderEditRefused)})
    orders = await uow.orders.lock(wanted) if wanted else {}
    changes: list[OrderStatusChanged] = []
    results: list[list[Event] | Rejected] = []
    for fact in facts:
        if isinstance(fact, OrderCancelRefused):
            results.append([cancel_refused(fact.request_id, fact.order_id, fact.reasons)])
            continue
        if isinstance(fact, OrderEditRefused):
            results.append([edit_refused(fact.request_id, fact.order_id, fact.reasons)])
            continue
        order = orders.get(fact.order_id)
        if order is None:
            results.append(Rejected("unknown_order", f"no order {fact.order_id} was ever received"))
            continue
        events: list[Event] = []
        edit = fact.edit_request_id if isinstance(fact, OrderAllocated) else None
        proposal = proposed_status(fact)
        moved = advance(order, proposal.status)
        if moved is None and (steps := implied_steps(order.status, proposal.status)):
            for step in steps:  # publish what the fact proves happened, then the fact itself
                passed = advance(order, step)
                if passed is None:
                    break
                order = orders[order.order_id] = passed
                shipments = proposal.shipments if step is OrderStatus.ALLOCATED else ()
                change = status_changed(passed, shipments=shipments, occurred_at=fact.occurred_at)
                changes.append(change)
                events.append(change)
                metrics.count(metrics.ORDER_STATUS, passed.status.value)
            moved = advance(order, proposal.status)
        if moved is None:
            log.warning(
                "status change refused by the state machine",
                extra={"order_id": str(order.order_id), "from": order.status, "to": proposal.status.value},
            )
        else:
            orders[order.order_id] = moved
            change = status_changed(
                moved,
                reasons=proposal.reasons,
                shipments=proposal.shipments,
                eta=proposal.eta,
                occurred_at=fact.occurred_at,
                edited=fact.order if edit is not None and isinstance(fact, OrderAllocated) else None,
            )
            changes.append(change)
            events.append(change)
            metrics.count(metrics.ORDER_STATUS, moved.status.value)
            if order.received_at is not None:
                since_receipt = (datetime.now(UTC) - order.received_at).total_seconds()
                metrics.observe(metrics.STATUS_LATENCY, moved.status.value, value=since_receipt)
        if (request_id := accepted_cancel(fact)) is not None:
            events.append(
                CancellationOutcome(request_id=request_id, order_id=order.order_id, outcome="accepted")
            )
        if edit is not None and isinstance(fact, OrderAllocated):
            await uow.orders.replace_details(order.order_id, fact.order)
            events.append(
                EditOutcome(request_id=edit, order_id=order.order_id, outcome="accepted", order=fact.order)
            )
        results.append(events)
    if changes:
        await uow.orders.record_statuses(changes)
    return results


def cancel_refused(request_id: str, order_id: UUID | None, reasons: Sequence[Reason]) -> CancellationOutcome:
    return CancellationOutcome(
        request_id=request_id, order_id=order_id, outcome="refused", reasons=list(reasons)
    )


async def requested_order(request: CancelRequested | EditRequested, uow: IntakeUnit) -> Order | None:
    """The order a command names: by order id (of the command's channel only, when it names one) or
    by channel and external id; None when intake does not know it (yet)."""
    if request.order_id is not None:
        order = await uow.orders.find(request.order_id)
        if order is not None and request.channel is not None and order.channel != request.channel:
            return None
        return order
    if request.channel and request.external_id:
        return await uow.orders.find_by_channel(request.channel, request.external_id)
    raise Rejected("schema_violation", "name the order by order_id or by channel and external_id")


async def request_cancel(request: CancelRequested, uow: IntakeUnit) -> list[Event]:
    """Find the order, act once per request id, refuse what is clearly too late, forward the rest.

    A request for an order not known (yet) is refused with `unknown_order` but not recorded: the
    order may simply not have arrived, and the channel may send the same request again. A request
    naming both the order id and a channel (the HTTP gateway names the channel its caller's key may
    act for) is for an order of that channel only: another channel's order is `unknown_order` too,
    exactly like one that does not exist.
    """
    order = await requested_order(request, uow)
    if order is None:
        unknown = Reason(code="unknown_order", message="no such order (yet)")
        return [cancel_refused(request.request_id, request.order_id, [unknown])]
    if not await uow.cancel_requests.claim(request.request_id, order.order_id):
        return []
    if (refusal := cancel_refusal(order.status)) is not None:
        reason = Reason(code=refusal.code, message=refusal.message)
        return [cancel_refused(request.request_id, order.order_id, [reason])]
    return [
        OrderCancelRequested(
            order_id=order.order_id, request_id=request.request_id, lines=request.lines, reason=request.reason
        )
    ]


async def pass_payment_on(update: PaymentUpdate, uow: IntakeUnit) -> list[Event]:
    """Find the order and pass the payment event on to allocation, once per payment event id.

    A payment event for no known order is rejected (`unknown_order`, a dead letter with its cause):
    it can be replayed once the order exists."""
    if update.order_id is not None:
        order = await uow.orders.find(update.order_id)
    elif update.channel and update.external_id:
        order = await uow.orders.find_by_channel(update.channel, update.external_id)
    else:
        raise Rejected("schema_violation", "name the order by order_id or by channel and external_id")
    if order is None:
        raise Rejected("unknown_order", "no such order (yet)")
    if not await uow.payment_events.first_time(update.payment_event_id, order.order_id):
        return []
    return [
        OrderPaymentChanged(
            order_id=order.order_id, payment_event_id=update.payment_event_id, status=update.status
        )
    ]


async def erase_customer(request: ErasureRequested, uow: IntakeUnit) -> list[Event]:
    """Erase the customer's orders placed before the request, once per request id: their details
    lose name, e-mail, address and customer id; ids, lines, statuses and timelines stay (the
    timeline never held personal data). Reports what it changed."""
    if not await uow.erasures.claim(Erasure.of(request)):
        return []
    erased = await uow.orders.erase(request)
    await uow.erasures.record(request.request_id, erased)
    return [applied(request, "intake", erased)]


def edit_refused(request_id: str, order_id: UUID | None, reasons: Sequence[Reason]) -> EditOutcome:
    return EditOutcome(request_id=request_id, order_id=order_id, outcome="refused", reasons=list(reasons))


async def request_edit(request: EditRequested, uow: IntakeUnit) -> list[Event]:
    """Find the order, act once per request id, refuse an order that is not where edits apply, and
    send the order as the edit would make it to validation.

    Like a cancel: a request for an order not known (yet) is refused with `unknown_order` and not
    recorded, and one naming the order id and a channel is for that channel's order only.
    """
    order = await requested_order(request, uow)
    if request.shipping_address is None and request.lines is None:
        raise Rejected("schema_violation", "an edit changes the shipping_address, the lines, or both")
    if order is None:
        unknown = Reason(code="unknown_order", message="no such order (yet)")
        return [edit_refused(request.request_id, request.order_id, [unknown])]
    if not await uow.edit_requests.claim(request.request_id, order.order_id):
        return []
    if (refusal := edit_refusal(order.status)) is not None:
        return [
            edit_refused(
                request.request_id, order.order_id, [Reason(code=refusal.code, message=refusal.message)]
            )
        ]
    current = await uow.orders.current_details(order.order_id)
    changes: dict[str, object] = {}
    if request.shipping_address is not None:
        changes["shipping_address"] = request.shipping_address
    if request.lines is not None:
        changes["lines"] = request.lines
    if request.payment is not None:
        changes["payment"] = request.payment
    edited = current.model_copy(update=changes)
    before = [
        ShipmentLine(sku=line.sku, quantity=line.quantity) for line in current.lines if line.quantity > 0
    ]
    return [
        OrderEditRequested(
            order_id=order.order_id, request_id=request.request_id, order=edited, previous_lines=before
        )
    ]
