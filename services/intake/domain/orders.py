"""Order identity, de-duplication and the status state machine: pure rules, no I/O.

Intake is the home of every order: it gives it an id and is the single writer of its public
status stream, so versions are gapless and a status never goes backwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

# The order id is shared with the HTTP gateway, through libs.
from libs.contracts.identity import ORDER_NAMESPACE as ORDER_NAMESPACE
from libs.contracts.identity import order_id_for as order_id_for
from libs.contracts.vocabulary import OrderStatus


def fingerprint(order: dict[str, Any]) -> str:
    """A digest of what the channel said about the order, independent of key order and spacing."""
    canonical = json.dumps(order, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Submission(Enum):
    NEW = "new"
    RETRY = "retry"
    CONFLICT = "conflict"


def classify_submission(existing_fingerprint: str | None, incoming_fingerprint: str) -> Submission:
    """A channel retry carries the same order; a different order under a used id is a conflict."""
    if existing_fingerprint is None:
        return Submission.NEW
    if existing_fingerprint == incoming_fingerprint:
        return Submission.RETRY
    return Submission.CONFLICT


def classify_submissions(
    submissions: Sequence[tuple[uuid.UUID, str]], recorded: Mapping[uuid.UUID, str]
) -> list[Submission]:
    """Each (order id, fingerprint) of a batch, in order, against what was recorded before it: the
    fingerprint already on file for its order, else the first submission of the batch that made
    the order. So a channel order submitted twice in one batch is one order: the second submission
    is a retry or a conflict of the first, never a second order."""
    known = dict(recorded)
    verdicts = []
    for order_id, digest in submissions:
        verdict = classify_submission(known.get(order_id), digest)
        if verdict is Submission.NEW:
            known[order_id] = digest
        verdicts.append(verdict)
    return verdicts


TERMINAL = frozenset(
    {OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.RETURNED, OrderStatus.REFUNDED}
)

# Which status may follow which. `awaiting_payment`: stock reserved for a pending payment (from
# `validated`, or from `backordered` when stock arrived first); it moves on when the payment is
# authorized (`allocated`) and ends `cancelled` when it fails or the deadline passes.
# Which status may follow which. `allocated -> allocated` is a new allocation (partial
# cancellation, re-sourcing); `in_fulfillment -> allocated` is re-sourcing after a failed
# shipment: the customer never sees an order go back further than `allocated`.
SOURCED = frozenset({OrderStatus.ALLOCATED, OrderStatus.BACKORDERED, OrderStatus.IN_FULFILLMENT})
"""Where an order can be while its stock is being sourced or re-sourced (a parcel failed)."""
LEAVING = frozenset(
    {OrderStatus.PARTIALLY_SHIPPED, OrderStatus.SHIPPED, OrderStatus.DELIVERED, OrderStatus.READY_FOR_PICKUP}
)
"""How far its parcels got. Fulfillment reports these from any sourced status: an update may skip
stages (straight to `delivered`), and part of an order can ship while the rest is backordered."""

NEXT: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.RECEIVED: frozenset(
        {OrderStatus.VALIDATED, OrderStatus.REJECTED, OrderStatus.ON_HOLD, OrderStatus.CANCELLED}
    ),
    OrderStatus.ON_HOLD: frozenset({OrderStatus.VALIDATED, OrderStatus.REJECTED, OrderStatus.CANCELLED}),
    OrderStatus.VALIDATED: frozenset(
        {OrderStatus.ALLOCATED, OrderStatus.BACKORDERED, OrderStatus.CANCELLED, OrderStatus.AWAITING_PAYMENT}
    ),
    # `awaiting_payment -> awaiting_payment`: some lines cancelled, the rest still reserved.
    OrderStatus.AWAITING_PAYMENT: frozenset(
        {OrderStatus.AWAITING_PAYMENT, OrderStatus.ALLOCATED, OrderStatus.BACKORDERED, OrderStatus.CANCELLED}
    ),
    OrderStatus.ALLOCATED: SOURCED | LEAVING | {OrderStatus.CANCELLED},
    OrderStatus.BACKORDERED: SOURCED | LEAVING | {OrderStatus.CANCELLED, OrderStatus.AWAITING_PAYMENT},
    OrderStatus.IN_FULFILLMENT: SOURCED | LEAVING | {OrderStatus.CANCELLED},
    # `-> refunded`: every parcel still on its way was lost in transit and refunded.
    OrderStatus.PARTIALLY_SHIPPED: frozenset(
        {OrderStatus.PARTIALLY_SHIPPED, OrderStatus.SHIPPED, OrderStatus.DELIVERED, OrderStatus.REFUNDED}
    ),
    # `shipped -> shipped`: the same status with news (an ETA re-computed because a stage is late).
    OrderStatus.SHIPPED: frozenset({OrderStatus.SHIPPED, OrderStatus.DELIVERED, OrderStatus.REFUNDED}),
    OrderStatus.READY_FOR_PICKUP: SOURCED | {OrderStatus.DELIVERED, OrderStatus.CANCELLED},
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.DELIVERED: frozenset({OrderStatus.PARTIALLY_RETURNED, OrderStatus.RETURNED}),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.PARTIALLY_RETURNED: frozenset({OrderStatus.PARTIALLY_RETURNED, OrderStatus.RETURNED}),
    OrderStatus.RETURNED: frozenset(),
    OrderStatus.REFUNDED: frozenset(),
}


STILL_SHIPPING = frozenset({OrderStatus.ALLOCATED, OrderStatus.BACKORDERED, OrderStatus.IN_FULFILLMENT})


def as_seen_by_customer(current: OrderStatus, proposed: OrderStatus) -> OrderStatus:
    """Once part of an order has left, it is `partially_shipped` until every part has: a part
    sourced again (allocated), waiting for stock (backordered) or back in a pipeline never makes
    the order look as if nothing had shipped. Likewise a `shipped` order stays `shipped` while the
    replacement of a parcel lost in transit is sourced and prepared (with the new shipments)."""
    if current is OrderStatus.PARTIALLY_SHIPPED and proposed in STILL_SHIPPING:
        return OrderStatus.PARTIALLY_SHIPPED
    if current is OrderStatus.SHIPPED and proposed in STILL_SHIPPING | {OrderStatus.PARTIALLY_SHIPPED}:
        return OrderStatus.SHIPPED
    return proposed


class Transition(Enum):
    APPLY = "apply"
    REFUSE = "refuse"


def decide_transition(current: OrderStatus, proposed: OrderStatus) -> Transition:
    """Apply a status only if the state machine allows it from the current one."""
    return Transition.APPLY if proposed in NEXT[current] else Transition.REFUSE


@dataclass(frozen=True)
class Order:
    """An order as intake tracks it: who placed it, where it stands, and the last version published."""

    order_id: uuid.UUID
    channel: str
    external_id: str
    status: OrderStatus
    version: int
    received_at: datetime | None = None


def receive(channel: str, external_id: str) -> Order:
    """A new channel order: its id, status `received`, version 1."""
    return Order(order_id_for(channel, external_id), channel, external_id, OrderStatus.RECEIVED, 1)


def advance(order: Order, proposed: OrderStatus) -> Order | None:
    """The order's next version, with the status its customer should see; None when the state
    machine refuses the move (the order stays as it is and no version is used)."""
    seen = as_seen_by_customer(order.status, proposed)
    if decide_transition(order.status, seen) is Transition.REFUSE:
        return None
    return dataclasses.replace(order, status=seen, version=order.version + 1)


BEFORE_SOURCING = frozenset({OrderStatus.RECEIVED, OrderStatus.ON_HOLD})
AFTER_ALLOCATION = frozenset(
    {
        OrderStatus.IN_FULFILLMENT,
        OrderStatus.PARTIALLY_SHIPPED,
        OrderStatus.SHIPPED,
        OrderStatus.DELIVERED,
        OrderStatus.READY_FOR_PICKUP,
    }
)


def implied_steps(current: OrderStatus, proposed: OrderStatus) -> list[OrderStatus]:
    """The statuses a fact proves the order passed through but whose own facts have not come yet.

    Each service publishes its facts on its own topic, so after a restart one consumer group may
    resume before another: allocation's `allocated` can reach intake before validation's
    `validated`, fulfillment's `in_fulfillment` before allocation's `allocated`. Allocation sources
    only validated orders and fulfillment receives only allocated ones, so such a fact proves the
    steps before it: intake publishes them first (the late fact is then refused as stale) rather
    than dropping the fact and leaving the order behind for good. Empty when nothing is implied."""
    if proposed in SOURCED | {OrderStatus.AWAITING_PAYMENT} and current in BEFORE_SOURCING:
        return [OrderStatus.VALIDATED]
    if proposed in AFTER_ALLOCATION:
        if current in BEFORE_SOURCING:
            return [OrderStatus.VALIDATED, OrderStatus.ALLOCATED]
        if current in (OrderStatus.VALIDATED, OrderStatus.AWAITING_PAYMENT):
            return [OrderStatus.ALLOCATED]
    return []


@dataclass(frozen=True)
class CancelRefusal:
    code: str
    message: str


def cancel_refusal(status: OrderStatus) -> CancelRefusal | None:
    """Refuse what is clearly too late: an order that has wholly shipped, or one that is already
    final. Anything else (partially shipped included: its remainder may still be cancellable) is
    for allocation and fulfillment to decide."""
    if status in (
        OrderStatus.SHIPPED,
        OrderStatus.DELIVERED,
        OrderStatus.PARTIALLY_RETURNED,
        OrderStatus.RETURNED,
    ):
        return CancelRefusal("already_shipped", f"the order is {status}")
    if status in (OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.REFUNDED):
        return CancelRefusal("already_final", f"the order is {status}")
    return None


EDITABLE = frozenset({OrderStatus.ALLOCATED, OrderStatus.IN_FULFILLMENT})
"""Where an order may be edited: its stock is reserved and none of it has left. Whether a parcel has
passed its pipeline's ship point is fulfillment's to say; before allocation there is nothing to
re-reserve yet, and a backorder waits for stock that the edit would change."""


def edit_refusal(status: OrderStatus) -> CancelRefusal | None:
    """Refuse an edit of an order that is not (or no longer) where edits apply."""
    if status in (OrderStatus.PARTIALLY_SHIPPED, OrderStatus.SHIPPED, OrderStatus.DELIVERED):
        return CancelRefusal("already_shipped", f"the order is {status}")
    if status in TERMINAL:
        return CancelRefusal("already_final", f"the order is {status}")
    if status not in EDITABLE:
        return CancelRefusal("not_editable", f"the order is {status}: edits apply once it is allocated")
    return None
