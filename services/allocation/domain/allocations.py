"""An order's allocation: its statuses, its shipments, and what a cancellation may take. Pure.

In words:
1. An order is `allocated` (every unit it still needs is reserved or shipped), `backordered` (some
   lines wait for stock: the whole order, or the remainder of a parcel that failed and could not be
   sourced again) or `cancelled`. Units are reserved per shipment line and end `shipped`, `failed`
   (written off at the location) or `released` (cancelled).
2. Each (re-)allocation is a new generation; shipment ids are derived from the order, the
   generation and the location, so the same allocation always names its shipments the same.
3. What an order has now is every shipment with units still reserved or already shipped.
4. Lines that wait for stock hold none: cancelling only them is decided here, at once. Anything
   that holds stock is forwarded to fulfillment, which knows what has left the building.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from services.allocation.domain.sourcing import Plan

Lines = tuple[tuple[str, int], ...]
"""(sku, quantity) pairs, in order."""

FIRST_GENERATION = 1


class AllocationStatus(StrEnum):
    ALLOCATED = "allocated"
    BACKORDERED = "backordered"
    CANCELLED = "cancelled"


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    SHIPPED = "shipped"
    FAILED = "failed"
    RELEASED = "released"
    LOST = "lost"
    """Shipped, then lost, damaged or returned to sender in transit: written off, no longer the order's."""


HELD = frozenset({ReservationStatus.RESERVED, ReservationStatus.SHIPPED})
"""Reservation statuses that are part of the order now: reserved for it, or already on their way."""


def shipment_id(order_id: UUID, generation: int, location_id: str) -> str:
    """Stable: the same allocation of the same order always names its shipments the same."""
    return str(uuid.uuid5(order_id, f"{generation}/{location_id}"))


@dataclass(frozen=True)
class Shipment:
    shipment_id: str
    location_id: str
    lines: Lines


@dataclass(frozen=True)
class Reservation:
    """Units of one sku at one location promised to one shipment of an order."""

    order_id: UUID
    shipment_id: str
    location_id: str
    sku: str
    quantity: int


@dataclass(frozen=True)
class ReservedLine:
    """A reservation as it stands: still reserved, or shipped, failed, released."""

    shipment_id: str
    location_id: str
    sku: str
    quantity: int
    status: ReservationStatus


def planned_shipments(order_id: UUID, generation: int, plan: Plan) -> list[Shipment]:
    return [
        Shipment(shipment_id(order_id, generation, s.location_id), s.location_id, s.lines)
        for s in plan.shipments
    ]


def reservations_for(order_id: UUID, generation: int, plan: Plan) -> list[Reservation]:
    """What a plan reserves: one reservation per shipment line."""
    return [
        Reservation(order_id, s.shipment_id, s.location_id, sku, quantity)
        for s in planned_shipments(order_id, generation, plan)
        for sku, quantity in s.lines
    ]


def current_shipments(lines: Iterable[ReservedLine]) -> list[Shipment]:
    """What an order has now: every shipment with units still reserved or already shipped, in
    shipment id order; released and written-off units are no longer part of it."""
    by_shipment: dict[str, tuple[str, list[tuple[str, int]]]] = {}
    for line in sorted(lines, key=lambda r: (r.shipment_id, r.sku)):
        if line.status in HELD:
            _, held = by_shipment.setdefault(line.shipment_id, (line.location_id, []))
            held.append((line.sku, line.quantity))
    return [Shipment(sid, location, tuple(held)) for sid, (location, held) in by_shipment.items()]


def holds_stock(lines: Iterable[ReservedLine]) -> bool:
    return any(line.status in HELD for line in lines)


def remainder(status: AllocationStatus | None, pending: Lines | None) -> Lines:
    """The lines of an order that wait for stock after a parcel failed (none when it waits whole)."""
    return (pending or ()) if status is AllocationStatus.BACKORDERED else ()


def merge(*parts: Lines) -> Lines:
    """Lines of the same sku added up, in the order skus first appear."""
    total: dict[str, int] = {}
    for part in parts:
        for sku, quantity in part:
            total[sku] = total.get(sku, 0) + quantity
    return tuple(total.items())


def without(waiting: Lines, cancelled: Lines) -> Lines | None:
    """What still waits once ``cancelled`` is taken out of ``waiting``; None when the cancelled lines
    ask for more of a sku than waits (they then touch stock that is held, not only waiting lines)."""
    left = dict(merge(waiting))
    for sku, quantity in merge(cancelled):
        if left.get(sku, 0) < quantity:
            return None
        left[sku] -= quantity
    return tuple((sku, q) for sku, q in left.items() if q > 0)


@dataclass(frozen=True)
class Refuse:
    code: str
    message: str


@dataclass(frozen=True)
class CancelAtOnce:
    """Nothing of the order is reserved or shipped: it is cancelled here, nothing to release."""


@dataclass(frozen=True)
class CancelWaitingLines:
    """Only lines of a backordered remainder are cancelled: ``left`` still waits."""

    left: Lines


@dataclass(frozen=True)
class Forward:
    """Stock is held: fulfillment decides what can still be taken out of its pipelines."""


CancelDecision = Refuse | CancelAtOnce | CancelWaitingLines | Forward


def decide_cancel(
    status: AllocationStatus | None, pending: Lines | None, holds: bool, lines: Lines | None
) -> CancelDecision:
    """A cancel request (``lines`` None: the whole order) against what allocation knows of the order.

    An order allocation never saw is cancelled at once (and a late validation will not allocate it);
    lines can only be cancelled once the order holds stock; lines that all belong to a backordered
    remainder are cancelled here; everything else goes to fulfillment."""
    if status is AllocationStatus.CANCELLED:
        return Refuse("already_cancelled", "the order is already cancelled")
    if not holds:
        if lines is not None:
            return Refuse(
                "partial_cancel_before_allocation",
                "lines can be cancelled once the order is allocated; cancel the whole order instead",
            )
        return CancelAtOnce()
    waiting = remainder(status, pending)
    if lines is not None and waiting and (left := without(waiting, lines)) is not None:
        return CancelWaitingLines(left)
    return Forward()


@dataclass(frozen=True)
class GiveBack:
    """Lines cancelled from an order whose stock waits for its payment: the reserved units each
    shipment gives back, ``(shipment id, sku, units)``, and what still waits for stock."""

    units: tuple[tuple[str, str, int], ...]
    waiting: Lines


def give_back_lines(held: Iterable[ReservedLine], waiting: Lines, cancelled: Lines) -> GiveBack | Refuse:
    """Such an order has not reached fulfillment, so allocation takes the lines out itself: from what
    waits for stock first (it holds nothing), then from the reserved units, one shipment after the
    other in a fixed order (by shipment id), so a redelivered request takes the same units. A sku
    asked for more units than the order has is refused, and nothing is taken."""
    left = dict(merge(waiting))
    reserved = sorted(
        (line for line in held if line.status is ReservationStatus.RESERVED),
        key=lambda line: line.shipment_id,
    )
    units: list[tuple[str, str, int]] = []
    for sku, quantity in merge(cancelled):
        from_waiting = min(left.get(sku, 0), quantity)
        if from_waiting:
            left[sku] -= from_waiting
        rest = quantity - from_waiting
        for line in (r for r in reserved if r.sku == sku):
            if rest == 0:
                break
            take = min(line.quantity, rest)
            units.append((line.shipment_id, sku, take))
            rest -= take
        if rest:
            return Refuse("invalid_cancel_lines", f"{sku}: {quantity} not on the order")
    return GiveBack(tuple(units), tuple((sku, q) for sku, q in left.items() if q > 0))


def cancelled_after_release(
    whole: bool, still_holds: bool, status: AllocationStatus, pending: Lines | None
) -> bool:
    """After fulfillment released units, the order is cancelled if the whole order was asked for, or
    if nothing of it is left: no units reserved or shipped, and no remainder waiting for stock."""
    return whole or (not still_holds and not remainder(status, pending))


def after_failed_parcel(
    status: AllocationStatus, pending: Lines | None, failed: Lines, sourced_again: bool
) -> tuple[AllocationStatus, Lines | None]:
    """Status and waiting lines after a parcel failed: sourced again, the order waits only for what
    waited before; otherwise the failed lines join that remainder."""
    earlier = remainder(status, pending)
    if sourced_again:
        return (AllocationStatus.BACKORDERED, earlier) if earlier else (AllocationStatus.ALLOCATED, None)
    return AllocationStatus.BACKORDERED, merge(earlier, failed)
