"""Allocation's use cases: keep locations and stock, allocate validated orders, follow parcels and
cancellations, and give every unit that becomes free to the oldest backorder waiting for it.

Each takes contract objects and a unit of work and returns the facts it caused; it never sees a
topic, a header or a database connection. The rules themselves are pure, in ``domain/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from uuid import UUID

from libs.contracts.envelope import Event
from libs.contracts.inventory import LocationUpdated, StockAdjusted
from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderBackordered,
    OrderCancelAccepted,
    OrderCancelForwarded,
    OrderCancelled,
    OrderCancelRefused,
    OrderCancelRequested,
    OrderValidated,
    ShipmentFailed,
    ShipmentLost,
    ShipmentShipped,
)
from libs.contracts.orders import OrderDetails, Reason, ShipmentLine
from libs.contracts.orders import Shipment as ShipmentContract
from libs.contracts.privacy import Erasure, ErasureRequested, customers_of, kept
from libs.contracts.returns import ReturnArrived
from libs.contracts.vocabulary import ShippingMethod
from libs.platform import metrics
from libs.platform.erasures import Erased, applied
from libs.platform.records import Rejected
from services.allocation.app.ports import AllocationChange, AllocationUnit, NewAllocation, Release, Waiting
from services.allocation.domain import sourcing
from services.allocation.domain.allocations import (
    FIRST_GENERATION,
    AllocationStatus,
    CancelAtOnce,
    CancelWaitingLines,
    Lines,
    Refuse,
    ReservationStatus,
    Shipment,
    after_failed_parcel,
    cancelled_after_release,
    current_shipments,
    decide_cancel,
    holds_stock,
    planned_shipments,
    remainder,
    reservations_for,
)
from services.allocation.domain.sourcing import Plan, Rules, Shortage
from services.allocation.domain.stock import BelowReserved, adjust, available


def rules_from(max_shipments: int, cost_per_km: str) -> Rules:
    return Rules(max_shipments=max_shipments, cost_per_km=Decimal(cost_per_km))


def request_for(order: OrderDetails, lines: Lines | None = None) -> sourcing.Request:
    """What to source: the whole order, or only ``lines`` (what waits after a parcel failed)."""
    address = order.shipping_address
    return sourcing.Request(
        lines=lines if lines is not None else tuple((line.sku, line.quantity) for line in order.lines),
        destination=sourcing.Destination(address.country, address.lat, address.lon),
        express=order.shipping_method is ShippingMethod.EXPRESS,
    )


def _as_lines(lines: Sequence[ShipmentLine]) -> Lines:
    return tuple((line.sku, line.quantity) for line in lines)


def _allocated(
    order_id: UUID,
    order: OrderDetails,
    shipments: Sequence[Shipment],
    cancel_request_id: str | None = None,
    waiting: Lines = (),
) -> OrderAllocated:
    """`order.allocated` with every shipment the order has now, and the lines still waiting for stock."""
    return OrderAllocated(
        order_id=order_id,
        order=order,
        shipments=[
            ShipmentContract(
                shipment_id=s.shipment_id,
                location_id=s.location_id,
                lines=[ShipmentLine(sku=sku, quantity=q) for sku, q in s.lines],
            )
            for s in shipments
        ],
        cancel_request_id=cancel_request_id,
        backordered_lines=[ShipmentLine(sku=sku, quantity=q) for sku, q in waiting],
    )


def _backordered(order_id: UUID, shortage: Shortage) -> OrderBackordered:
    reasons = [Reason(code=m.code, message=m.message, sku=m.sku) for m in shortage.missing]
    return OrderBackordered(order_id=order_id, reasons=reasons)


def _count(outcomes: Sequence[Plan | Shortage]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, Plan):
            metrics.count(metrics.RESERVATIONS, "allocated")
            metrics.count(
                metrics.RESERVED_UNITS, amount=sum(q for s in outcome.shipments for _, q in s.lines)
            )
        else:
            metrics.count(metrics.RESERVATIONS, "backordered")


async def _plan(
    requests: Sequence[sourcing.Request],
    uow: AllocationUnit,
    rules: Rules,
    exclude: frozenset[str] = frozenset(),
) -> list[Plan | Shortage]:
    """Lock the stock of every sku the requests need (once), read the locations (once) and plan each
    request in turn against what the ones before it took."""
    levels = await uow.stock.lock(sorted({sku for r in requests for sku, _ in r.lines}))
    locations = [loc for loc in await uow.locations.active() if loc.location_id not in exclude]
    return sourcing.plan_in_turn(requests, locations, available(levels), rules)


async def allocate_orders(
    validated: Sequence[OrderValidated], uow: AllocationUnit, rules: Rules
) -> list[list[Event]]:
    """Reserve stock for each validated order, in the order they came; an order that cannot be
    covered whole is backordered and reserves nothing.

    Set-based: the stock rows (locked), the orders allocation knows already and the locations are
    read once for all of them, each order is planned in memory against what the orders before it
    took, and all reservations and allocations are written at once. An order seen before (a
    redelivery, or one cancelled before it was validated) causes nothing. An order placed before an
    erasure of its customer that arrives after it is kept and passed on erased."""
    first: dict[UUID, int] = {}
    for i, fact in enumerate(validated):
        first.setdefault(fact.order_id, i)
    # Locks first: the same order allocated by another process meanwhile holds the same skus, so
    # its commit is seen by what is read next.
    levels = await uow.stock.lock(sorted({line.sku for fact in validated for line in fact.order.lines}))
    known = await uow.allocations.known(list(first))
    orders = [validated[i] for order_id, i in first.items() if order_id not in known]
    results: list[list[Event]] = [[] for _ in validated]
    if not orders:
        return results
    requests = [request_for(fact.order) for fact in orders]
    outcomes = sourcing.plan_in_turn(requests, await uow.locations.active(), available(levels), rules)
    erasures = await uow.erasures.covering(customers_of(fact.order for fact in orders))
    reservations = []
    rows = []
    for fact, outcome in zip(orders, outcomes, strict=True):
        caused: Event
        order = kept(fact.order, erasures)
        if isinstance(outcome, Plan):
            reservations.extend(reservations_for(fact.order_id, FIRST_GENERATION, outcome))
            rows.append(NewAllocation(fact.order_id, AllocationStatus.ALLOCATED, FIRST_GENERATION, order))
            shipments = planned_shipments(fact.order_id, FIRST_GENERATION, outcome)
            caused = _allocated(fact.order_id, order, shipments)
        else:
            rows.append(NewAllocation(fact.order_id, AllocationStatus.BACKORDERED, 0, order))
            caused = _backordered(fact.order_id, outcome)
        results[first[fact.order_id]] = [caused]
    await uow.stock.reserve(reservations)
    await uow.allocations.add(rows)
    _count(outcomes)
    return results


async def _allocate_waiting(skus: Sequence[str], uow: AllocationUnit, rules: Rules) -> list[Event]:
    """Give units that became free to the backorders waiting for them, oldest first; one that still
    cannot be covered keeps waiting (and its place) and takes nothing.

    Called wherever units become available: stock received or counted up, reservations released
    (whole or partial cancellation), a location (re-)activated. The caller holds the locks of
    ``skus`` taken before it freed the units, so a backorder written by a concurrent transaction
    has committed by now and is seen here."""
    if not skus:
        return []
    waiting = await uow.allocations.lock_waiting(skus)
    if not waiting:
        return []
    outcomes = await _plan([request_for(w.order, w.pending) for w in waiting], uow, rules)
    woken: list[Waiting] = []
    reservations = []
    for w, outcome in zip(waiting, outcomes, strict=True):
        if isinstance(outcome, Plan):
            woken.append(w)
            reservations.extend(reservations_for(w.order_id, w.generation + 1, outcome))
    if not woken:
        return []
    await uow.stock.reserve(reservations)
    await uow.allocations.update(
        [AllocationChange(w.order_id, AllocationStatus.ALLOCATED, w.generation + 1, None) for w in woken]
    )
    _count([o for o in outcomes if isinstance(o, Plan)])
    held = await uow.allocations.reservations([w.order_id for w in woken])
    return [_allocated(w.order_id, w.order, current_shipments(held.get(w.order_id, []))) for w in woken]


async def update_location(update: LocationUpdated, uow: AllocationUnit, rules: Rules) -> list[Event]:
    """Keep the location; units it holds that it can now ship (re-activated, more countries) go to
    waiting backorders, oldest first."""
    location = sourcing.Location(
        update.location_id,
        update.kind.value,
        frozenset(c.upper() for c in update.countries),
        update.cost_per_shipment,
        update.lat,
        update.lon,
        update.active,
    )
    await uow.locations.upsert(location, update.name)
    if not update.active:
        return []
    skus = await uow.stock.wanted_at(update.location_id)
    await uow.stock.serialise(skus)
    return await _allocate_waiting(skus, uow, rules)


async def adjust_stock(adjustment: StockAdjusted, uow: AllocationUnit, rules: Rules) -> list[Event]:
    """Apply a stock change once per adjustment id; new units go to waiting backorders, oldest first."""
    level = await uow.stock.lock_level(adjustment.sku, adjustment.location_id)
    if await uow.stock.adjustment_applied(adjustment.adjustment_id):
        return []
    applied = adjust(
        level,
        adjustment.adjustment_id,
        delta=adjustment.delta,
        count=adjustment.on_hand,
        reason=adjustment.reason,
    )
    if isinstance(applied, BelowReserved):
        raise Rejected("adjustment_below_reserved", applied.message)
    await uow.stock.apply(applied)
    if applied.delta <= 0:
        return []
    return await _allocate_waiting([adjustment.sku], uow, rules)


async def ship_shipment(fact: ShipmentShipped, uow: AllocationUnit) -> list[Event]:
    """Shipped units leave the stock: on hand and reserved both go down, `shipped` goes up."""
    await uow.stock.serialise(sorted({line.sku for line in fact.lines}))
    await uow.stock.settle(fact.shipment_id, ReservationStatus.SHIPPED)
    return []


async def fail_shipment(fact: ShipmentFailed, uow: AllocationUnit, rules: Rules) -> list[Event]:
    """Write the parcel's units off at the failing location and source them again elsewhere (never
    from that location); what cannot be sourced waits for stock, and stays cancellable by lines."""
    allocation = await uow.allocations.lock(fact.order_id)
    if allocation is None or allocation.order is None or allocation.status is AllocationStatus.CANCELLED:
        return []
    await uow.stock.serialise(sorted({line.sku for line in fact.lines}))
    written_off = await uow.stock.settle(fact.shipment_id, ReservationStatus.FAILED)
    if not written_off:
        return []
    order, generation = allocation.order, allocation.generation + 1
    failed = tuple((r.sku, r.quantity) for r in written_off)
    [outcome] = await _plan([request_for(order, failed)], uow, rules, exclude=frozenset({fact.location_id}))
    sourced_again = isinstance(outcome, Plan)
    status, pending = after_failed_parcel(allocation.status, allocation.pending, failed, sourced_again)
    if isinstance(outcome, Plan):
        await uow.stock.reserve(reservations_for(fact.order_id, generation, outcome))
    await uow.allocations.update([AllocationChange(fact.order_id, status, generation, pending)])
    _count([outcome])
    if isinstance(outcome, Shortage):
        return [_backordered(fact.order_id, outcome)]
    held = await uow.allocations.reservations([fact.order_id])
    waiting = remainder(status, pending)
    return [_allocated(fact.order_id, order, current_shipments(held.get(fact.order_id, [])), waiting=waiting)]


async def lose_shipment(fact: ShipmentLost, uow: AllocationUnit, rules: Rules) -> list[Event]:
    """A shipped parcel will not arrive: its units are written off (once) and, when the channel
    re-ships, sourced again from any location; what cannot be sourced waits for stock."""
    allocation = await uow.allocations.lock(fact.order_id)
    if allocation is None or allocation.order is None or allocation.status is AllocationStatus.CANCELLED:
        return []
    await uow.stock.serialise(sorted({line.sku for line in fact.lines}))
    written_off = await uow.stock.lose(fact.shipment_id)
    if not written_off or not fact.reship:
        return []
    order, generation = allocation.order, allocation.generation + 1
    lost = tuple((r.sku, r.quantity) for r in written_off)
    [outcome] = await _plan([request_for(order, lost)], uow, rules)
    sourced_again = isinstance(outcome, Plan)
    status, pending = after_failed_parcel(allocation.status, allocation.pending, lost, sourced_again)
    if isinstance(outcome, Plan):
        await uow.stock.reserve(reservations_for(fact.order_id, generation, outcome))
    await uow.allocations.update([AllocationChange(fact.order_id, status, generation, pending)])
    _count([outcome])
    if isinstance(outcome, Shortage):
        return [_backordered(fact.order_id, outcome)]
    held = await uow.allocations.reservations([fact.order_id])
    waiting = remainder(status, pending)
    return [_allocated(fact.order_id, order, current_shipments(held.get(fact.order_id, [])), waiting=waiting)]


def restock_id(return_id: str, sku: str) -> str:
    """One stock adjustment per return and sku: a redelivered arrival restocks nothing twice."""
    return f"return:{return_id}:{sku}"


async def restock_return(fact: ReturnArrived, uow: AllocationUnit, rules: Rules) -> list[Event]:
    """Resellable returned units go back on hand at the receiving location (once per return and
    sku) and to waiting backorders, oldest first; damaged ones left the stock when they shipped and
    stay written off."""
    skus = sorted({line.sku for line in fact.restock})
    await uow.stock.serialise(skus)
    restocked = []
    for line in fact.restock:
        adjustment_id = restock_id(fact.return_id, line.sku)
        level = await uow.stock.lock_level(line.sku, fact.location_id)
        if await uow.stock.adjustment_applied(adjustment_id):
            continue
        applied = adjust(level, adjustment_id, delta=line.quantity, count=None, reason="returned")
        assert not isinstance(applied, BelowReserved), "adding units never goes below reserved"
        await uow.stock.apply(applied)
        restocked.append(line.sku)
    return await _allocate_waiting(sorted(restocked), uow, rules)


async def request_cancel(fact: OrderCancelRequested, uow: AllocationUnit) -> list[Event]:
    """Cancel at once what holds no stock (an order allocation never saw, a backorder, lines of a
    backordered remainder); send the rest to fulfillment, which knows what has shipped."""
    allocation = await uow.allocations.lock(fact.order_id)
    held = []
    if allocation is not None and allocation.status is not AllocationStatus.CANCELLED:
        held = (await uow.allocations.reservations([fact.order_id])).get(fact.order_id, [])
    decision = decide_cancel(
        allocation.status if allocation else None,
        allocation.pending if allocation else None,
        holds_stock(held),
        _as_lines(fact.lines) if fact.lines is not None else None,
    )
    match decision:
        case Refuse(code=code, message=message):
            refusal = OrderCancelRefused(
                order_id=fact.order_id,
                request_id=fact.request_id,
                lines=fact.lines,
                reason=fact.reason,
                reasons=[Reason(code=code, message=message)],
            )
            return [refusal]
        case CancelAtOnce():
            if allocation is None:
                await uow.allocations.tombstone(fact.order_id)
            else:
                change = AllocationChange(
                    fact.order_id, AllocationStatus.CANCELLED, allocation.generation, None
                )
                await uow.allocations.update([change])
            return [OrderCancelled(order_id=fact.order_id, request_id=fact.request_id)]
        case CancelWaitingLines(left=left):
            assert allocation is not None and allocation.order is not None
            status = AllocationStatus.BACKORDERED if left else AllocationStatus.ALLOCATED
            await uow.allocations.update(
                [AllocationChange(fact.order_id, status, allocation.generation, left or None)]
            )
            shipments = current_shipments(held)
            return [_allocated(fact.order_id, allocation.order, shipments, fact.request_id, left)]
    forwarded = OrderCancelForwarded(
        order_id=fact.order_id, request_id=fact.request_id, lines=fact.lines, reason=fact.reason
    )
    return [forwarded]


async def release_cancelled(fact: OrderCancelAccepted, uow: AllocationUnit, rules: Rules) -> list[Event]:
    """Release exactly the reserved units fulfillment took out of its pipelines; they go to the
    oldest waiting backorders, not to whichever order asks next."""
    allocation = await uow.allocations.lock(fact.order_id)
    if allocation is None or allocation.order is None or allocation.status is AllocationStatus.CANCELLED:
        return []
    freed = sorted({line.sku for shipment in fact.release for line in shipment.lines})
    await uow.stock.serialise(freed)
    await uow.stock.release(
        [
            Release(shipment.shipment_id, line.sku, line.quantity)
            for shipment in fact.release
            for line in shipment.lines
        ]
    )
    held = (await uow.allocations.reservations([fact.order_id])).get(fact.order_id, [])
    out: list[Event]
    if cancelled_after_release(fact.whole, holds_stock(held), allocation.status, allocation.pending):
        change = AllocationChange(fact.order_id, AllocationStatus.CANCELLED, allocation.generation, None)
        await uow.allocations.update([change])
        out = [OrderCancelled(order_id=fact.order_id, request_id=fact.request_id)]
    else:
        waiting = remainder(allocation.status, allocation.pending)
        shipments = current_shipments(held)
        out = [_allocated(fact.order_id, allocation.order, shipments, fact.request_id, waiting)]
    return out + await _allocate_waiting(freed, uow, rules)


async def erase_customer(request: ErasureRequested, uow: AllocationUnit) -> list[Event]:
    """Erase the details allocation keeps of the customer's orders placed before the request, once
    per request id; stock, reservations and statuses stay. Reports what it changed."""
    if not await uow.erasures.claim(Erasure.of(request)):
        return []
    orders = await uow.allocations.erase(request)
    erased = Erased(orders, orders)
    await uow.erasures.record(request.request_id, erased)
    return [applied(request, "allocation", erased)]
