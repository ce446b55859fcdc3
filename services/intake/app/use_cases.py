"""Intake's use cases: record a submitted order; turn lifecycle facts into public status events."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from libs.contracts import topics
from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderBackordered,
    OrderCancelled,
    OrderCancelRefused,
    OrderCancelRequested,
    OrderFact,
    OrderFulfillmentProgressed,
    OrderHeld,
    OrderReceived,
    OrderRejected,
    OrderValidated,
)
from libs.contracts.orders import (
    CancellationOutcome,
    CancelRequested,
    OrderDetails,
    OrderRefused,
    OrderStatus,
    OrderStatusChanged,
    Reason,
    Shipment,
)
from libs.platform import metrics
from libs.platform.messaging import Outgoing, Rejected
from services.intake.adapters.order_book import PgOrderBook, StatusRow, StoredOrder
from services.intake.domain.orders import (
    Status,
    Submission,
    Transition,
    as_seen_by_customer,
    classify_submission,
    decide_transition,
    fingerprint,
    order_id_for,
)

log = logging.getLogger("baton.intake")


@dataclass(frozen=True)
class Topics:
    status: str
    refused: str
    lifecycle: str
    cancellations: str


async def record_submission(book: PgOrderBook, order: OrderDetails, t: Topics) -> list[Outgoing]:
    """A new channel order becomes `received`; a retry changes nothing; a conflict is refused.

    The insert is tried first (one statement for the common case); only when the channel order
    exists already is it read back to tell a retry from a conflict.
    """
    digest = fingerprint(order.model_dump(mode="json"))
    order_id = order_id_for(order.channel, order.external_id)
    stored = StoredOrder(order_id, order.channel, order.external_id, digest, Status.RECEIVED.value, 1)
    if not await book.insert(stored, order.model_dump_json()):
        existing = await book.find_by_channel(order.channel, order.external_id)
        assert existing is not None
        if classify_submission(existing.fingerprint, digest) is Submission.RETRY:
            return []
        refusal = OrderRefused(
            channel=order.channel,
            external_id=order.external_id,
            existing_order_id=existing.order_id,
            reasons=[
                Reason(
                    code="duplicate_external_id_conflict",
                    message=f"{order.channel_key} was already submitted with different content",
                )
            ],
        )
        return [Outgoing.event(t.refused, order.channel_key, refusal)]
    status = OrderStatusChanged(
        order_id=order_id,
        channel=order.channel,
        external_id=order.external_id,
        status=OrderStatus.RECEIVED,
        version=1,
    )
    await book.record_status(order_id, 1, status.status.value, status.model_dump_json(), status.occurred_at)
    metrics.count(metrics.ORDER_STATUS, Status.RECEIVED.value)
    received = OrderReceived(order_id=order_id, order=order)
    return [
        Outgoing.event(t.status, str(order_id), status),
        Outgoing.event(t.lifecycle, str(order_id), received),
    ]


def status_of(fact: OrderFact) -> tuple[Status, list[Reason], list[Shipment]] | None:
    """The status a lifecycle fact gives the order, with its reasons and shipments (None: no change)."""
    match fact:
        case OrderValidated():
            return Status.VALIDATED, [], []
        case OrderRejected(reasons=reasons):
            return Status.REJECTED, reasons, []
        case OrderHeld(reasons=reasons):
            return Status.ON_HOLD, reasons, []
        case OrderAllocated(shipments=shipments, backordered_lines=waiting) if waiting:
            reasons = [
                Reason(code="insufficient_stock", message=f"{line.quantity} waiting for stock", sku=line.sku)
                for line in waiting
            ]
            return Status.BACKORDERED, reasons, shipments
        case OrderAllocated(shipments=shipments):
            return Status.ALLOCATED, [], shipments
        case OrderBackordered(reasons=reasons):
            return Status.BACKORDERED, reasons, []
        case OrderCancelled(reasons=reasons):
            return Status.CANCELLED, reasons, []
        case OrderFulfillmentProgressed(status=status, shipments=shipments):
            return Status(status), [], shipments
    return None


def _outcome(
    t: Topics,
    order_id: UUID | None,
    request_id: str,
    outcome: str,
    reasons: list[Reason],
    key: str | None = None,
) -> Outgoing:
    """Keyed by the order id, or by what the request named when no such order exists."""
    event = CancellationOutcome(
        request_id=request_id,
        order_id=order_id,
        outcome=outcome,  # type: ignore[arg-type]
        reasons=reasons,
    )
    return Outgoing.event(t.cancellations, key or str(order_id), event)


async def publish_statuses(
    book: PgOrderBook, facts: Sequence[OrderFact | Rejected], t: Topics
) -> list[list[Outgoing] | Rejected]:
    """Give each order its next version if the state machine allows the move; else drop the fact.

    A whole batch at once: the orders are locked in one statement, the facts applied in order in
    memory (two facts for one order in a batch see each other), and the new versions written in
    one statement. Cancellation outcomes are published here too: a cancel is accepted when the
    order becomes `cancelled` (whole) or gets its reduced allocation (partial), refused when a
    service refused it. Items that are already ``Rejected`` (unparseable records) pass through.
    """
    wanted = sorted({f.order_id for f in facts if not isinstance(f, Rejected | OrderCancelRefused)}, key=str)
    orders = await book.lock_many(wanted) if wanted else {}
    written: list[StatusRow] = []
    results: list[list[Outgoing] | Rejected] = []
    for fact in facts:
        if isinstance(fact, Rejected):
            results.append(fact)
            continue
        if isinstance(fact, OrderCancelRefused):
            results.append([_outcome(t, fact.order_id, fact.request_id, "refused", fact.reasons)])
            continue
        order = orders.get(fact.order_id)
        if order is None:
            results.append(Rejected("unknown_order", f"no order {fact.order_id} was ever received"))
            continue
        out, moved, event = _apply_fact(order, fact, t)
        if moved is not None and event is not None:
            orders[fact.order_id] = moved
            written.append(
                StatusRow(
                    order.order_id, moved.version, moved.status, event.model_dump_json(), event.occurred_at
                )
            )
            metrics.count(metrics.ORDER_STATUS, moved.status)
            if order.received_at is not None:
                since_receipt = (datetime.now(UTC) - order.received_at).total_seconds()
                metrics.observe(metrics.STATUS_LATENCY, moved.status, value=since_receipt)
        results.append(out)
    if written:
        await book.record_statuses(written)
    return results


def _apply_fact(
    order: StoredOrder, fact: OrderFact, t: Topics
) -> tuple[list[Outgoing], StoredOrder | None, OrderStatusChanged | None]:
    """Events one fact causes, and the order's next state (None: the status does not change)."""
    change = status_of(fact)
    if change is None:
        return [], None, None
    proposed, reasons, shipments = change
    proposed = as_seen_by_customer(Status(order.status), proposed)
    out: list[Outgoing] = []
    if isinstance(fact, OrderCancelled):
        out.append(_outcome(t, fact.order_id, fact.request_id, "accepted", []))
    elif isinstance(fact, OrderAllocated) and fact.cancel_request_id:
        out.append(_outcome(t, fact.order_id, fact.cancel_request_id, "accepted", []))
    if decide_transition(Status(order.status), proposed) is Transition.REFUSE:
        log.warning(
            "status change refused by the state machine",
            extra={"order_id": str(order.order_id), "from": order.status, "to": proposed.value},
        )
        return out, None, None
    version = order.version + 1
    event = OrderStatusChanged(
        order_id=order.order_id,
        channel=order.channel,
        external_id=order.external_id,
        status=OrderStatus(proposed.value),
        version=version,
        reasons=reasons,
        shipments=shipments,
        eta=fact.eta if isinstance(fact, OrderFulfillmentProgressed) else None,
        occurred_at=fact.occurred_at,
    )
    moved = dataclasses.replace(order, status=proposed.value, version=version)
    return [Outgoing.event(t.status, str(order.order_id), event), *out], moved, event


async def request_cancel(book: PgOrderBook, request: CancelRequested, t: Topics) -> list[Outgoing]:
    """Find the order, act once per request id, refuse what is clearly too late, forward the rest."""
    if request.order_id is not None:
        order = await book.find_by_id(request.order_id)
    elif request.channel and request.external_id:
        order = await book.find_by_channel(request.channel, request.external_id)
    else:
        raise Rejected("schema_violation", "name the order by order_id or by channel and external_id")
    if order is None:
        # Not recorded: the order may simply not have arrived yet, and the channel may retry.
        reason = Reason(code="unknown_order", message="no such order (yet)")
        key = str(request.order_id) if request.order_id else f"{request.channel}:{request.external_id}"
        return [_outcome(t, request.order_id, request.request_id, "refused", [reason], key)]
    if not await book.record_cancel_request(request.request_id, order.order_id):
        return []
    if order.status in (Status.SHIPPED, Status.DELIVERED):
        reason = Reason(code="already_shipped", message=f"the order is {order.status}")
        return [_outcome(t, order.order_id, request.request_id, "refused", [reason])]
    if order.status in (Status.REJECTED, Status.CANCELLED):
        reason = Reason(code="already_final", message=f"the order is {order.status}")
        return [_outcome(t, order.order_id, request.request_id, "refused", [reason])]
    fact = OrderCancelRequested(
        order_id=order.order_id, request_id=request.request_id, lines=request.lines, reason=request.reason
    )
    return [Outgoing.event(t.lifecycle, str(order.order_id), fact)]


STATUS_FACTS = frozenset(
    {
        "order.validated",
        "order.rejected",
        "order.held",
        "order.allocated",
        "order.backordered",
        "order.cancelled",
        "order.cancel-refused",
        "order.fulfillment-progressed",
    }
)

__all__ = [
    "STATUS_FACTS",
    "Topics",
    "publish_statuses",
    "record_submission",
    "request_cancel",
    "topics",
]
