"""Order identity, de-duplication and the status state machine: pure rules, no I/O.

Intake is the home of every order: it gives it an id and is the single writer of its public
status stream, so versions are gapless and a status never goes backwards.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from enum import Enum, StrEnum
from typing import Any

ORDER_NAMESPACE = uuid.UUID("6f1c2a52-8f0e-4c36-9d5b-0b7a4e1f2d90")


def order_id_for(channel: str, external_id: str) -> uuid.UUID:
    """The same channel order always gets the same id, even if intake applies it twice."""
    return uuid.uuid5(ORDER_NAMESPACE, f"{channel}:{external_id}")


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


class Status(StrEnum):
    RECEIVED = "received"
    VALIDATED = "validated"
    REJECTED = "rejected"
    ON_HOLD = "on_hold"
    ALLOCATED = "allocated"
    BACKORDERED = "backordered"
    IN_FULFILLMENT = "in_fulfillment"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


TERMINAL = frozenset({Status.REJECTED, Status.DELIVERED, Status.CANCELLED})

# Which status may follow which. `allocated -> allocated` is a new allocation (partial
# cancellation, re-sourcing); `in_fulfillment -> allocated` is re-sourcing after a failed
# shipment: the customer never sees an order go back further than `allocated`.
NEXT: dict[Status, frozenset[Status]] = {
    Status.RECEIVED: frozenset({Status.VALIDATED, Status.REJECTED, Status.ON_HOLD, Status.CANCELLED}),
    Status.ON_HOLD: frozenset({Status.VALIDATED, Status.REJECTED, Status.CANCELLED}),
    Status.VALIDATED: frozenset({Status.ALLOCATED, Status.BACKORDERED, Status.CANCELLED}),
    Status.BACKORDERED: frozenset(
        {Status.BACKORDERED, Status.ALLOCATED, Status.IN_FULFILLMENT, Status.CANCELLED}
    ),
    Status.ALLOCATED: frozenset(
        {Status.ALLOCATED, Status.BACKORDERED, Status.IN_FULFILLMENT, Status.CANCELLED}
    ),
    Status.IN_FULFILLMENT: frozenset(
        {
            Status.IN_FULFILLMENT,
            Status.ALLOCATED,
            Status.BACKORDERED,
            Status.PARTIALLY_SHIPPED,
            Status.SHIPPED,
            Status.CANCELLED,
        }
    ),
    Status.PARTIALLY_SHIPPED: frozenset({Status.PARTIALLY_SHIPPED, Status.SHIPPED, Status.DELIVERED}),
    Status.SHIPPED: frozenset({Status.DELIVERED}),
    Status.REJECTED: frozenset(),
    Status.DELIVERED: frozenset(),
    Status.CANCELLED: frozenset(),
}


STILL_SHIPPING = frozenset({Status.ALLOCATED, Status.BACKORDERED, Status.IN_FULFILLMENT})


def as_seen_by_customer(current: Status, proposed: Status) -> Status:
    """Once part of an order has left, it is `partially_shipped` until every part has: a part
    sourced again (allocated), waiting for stock (backordered) or back in a pipeline never makes
    the order look as if nothing had shipped."""
    if current is Status.PARTIALLY_SHIPPED and proposed in STILL_SHIPPING:
        return Status.PARTIALLY_SHIPPED
    return proposed


class Transition(Enum):
    APPLY = "apply"
    REFUSE = "refuse"


def decide_transition(current: Status, proposed: Status) -> Transition:
    """Apply a status only if the state machine allows it from the current one."""
    return Transition.APPLY if proposed in NEXT[current] else Transition.REFUSE
