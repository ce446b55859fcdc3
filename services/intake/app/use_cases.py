"""Intake's use cases: record a submitted order; turn lifecycle facts into public status events."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from libs.contracts import topics
from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderBackordered,
    OrderFact,
    OrderHeld,
    OrderReceived,
    OrderRejected,
    OrderValidated,
)
from libs.contracts.orders import (
    OrderDetails,
    OrderRefused,
    OrderStatus,
    OrderStatusChanged,
    Reason,
    Shipment,
)
from libs.platform.messaging import Outgoing
from services.intake.adapters.order_book import PgOrderBook, StoredOrder
from services.intake.domain.orders import (
    Status,
    Submission,
    Transition,
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


async def record_submission(book: PgOrderBook, order: OrderDetails, t: Topics) -> list[Outgoing]:
    """A new channel order becomes `received`; a retry changes nothing; a conflict is refused."""
    digest = fingerprint(order.model_dump(mode="json"))
    existing = await book.find_by_channel(order.channel, order.external_id)
    outcome = classify_submission(existing.fingerprint if existing else None, digest)
    if outcome is Submission.RETRY:
        return []
    if outcome is Submission.CONFLICT:
        assert existing is not None
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

    order_id = order_id_for(order.channel, order.external_id)
    stored = StoredOrder(order_id, order.channel, order.external_id, digest, Status.RECEIVED.value, 1)
    if not await book.insert(stored, order.model_dump_json()):
        return []
    status = OrderStatusChanged(
        order_id=order_id,
        channel=order.channel,
        external_id=order.external_id,
        status=OrderStatus.RECEIVED,
        version=1,
    )
    await book.record_status(order_id, 1, status.status.value, status.model_dump_json(), status.occurred_at)
    received = OrderReceived(order_id=order_id, order=order)
    return [
        Outgoing.event(t.status, str(order_id), status),
        Outgoing.event(t.lifecycle, str(order_id), received),
    ]


def status_of(fact: OrderFact) -> tuple[Status, list[Reason], list[Shipment]]:
    match fact:
        case OrderValidated():
            return Status.VALIDATED, [], []
        case OrderRejected(reasons=reasons):
            return Status.REJECTED, reasons, []
        case OrderHeld(reasons=reasons):
            return Status.ON_HOLD, reasons, []
        case OrderAllocated(shipments=shipments):
            return Status.ALLOCATED, [], shipments
        case OrderBackordered(reasons=reasons):
            return Status.BACKORDERED, reasons, []
    raise ValueError(f"no status follows from {fact.event_type}")


async def publish_status(book: PgOrderBook, fact: OrderFact, t: Topics) -> list[Outgoing]:
    """Give the order its next version if the state machine allows the move; else drop the fact."""
    order = await book.lock(fact.order_id)
    if order is None:
        raise LookupError(f"unknown order {fact.order_id}")
    proposed, reasons, shipments = status_of(fact)
    if decide_transition(Status(order.status), proposed) is Transition.REFUSE:
        log.warning(
            "status change refused by the state machine",
            extra={"order_id": str(order.order_id), "from": order.status, "to": proposed.value},
        )
        return []
    version = order.version + 1
    event = OrderStatusChanged(
        order_id=order.order_id,
        channel=order.channel,
        external_id=order.external_id,
        status=OrderStatus(proposed.value),
        version=version,
        reasons=reasons,
        shipments=shipments,
        occurred_at=fact.occurred_at,
    )
    await book.record_status(
        order.order_id, version, proposed.value, event.model_dump_json(), event.occurred_at
    )
    return [Outgoing.event(t.status, str(order.order_id), event)]


STATUS_FACTS = frozenset(
    {"order.validated", "order.rejected", "order.held", "order.allocated", "order.backordered"}
)

__all__ = ["STATUS_FACTS", "Topics", "publish_status", "record_submission", "topics"]
