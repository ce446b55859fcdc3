"""Allocation's use cases: keep locations and stock, allocate validated orders, follow parcels and
cancellations, and give every unit that becomes free to the oldest backorder waiting for it.

Each takes contract objects and a unit of work and returns the facts it caused; it never sees a
topic, a header or a database connection. The rules themselves are pure, in ``domain/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
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
    OrderEditAccepted,
    OrderEditForwarded,
    OrderEditRefused,
    OrderEditValidated,
    OrderPaymentChanged,
    OrderReserved,
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
from libs.platform.timers import Timer
from libs.policy.channels import ChannelPolicies, ChannelPolicy, SourcingPolicy
from services.allocation.app.ports import (
    Allocation,
    AllocationChange,
    AllocationUnit,
    NewAllocation,
    PaymentRecord,
    Release,
    Waiting,
)
from services.allocation.domain import sourcing
from services.allocation.domain.allocations import (
    FIRST_GENERATION,
    AllocationStatus,
    CancelAtOnce,
    CancelWaitingLines,
    Lines,
    Refuse,
    ReservationStatus,
    ReservedLine,
    Shipment,
    after_failed_parcel,
    cancelled_after_release,
    current_shipments,
    decide_cancel,
    give_back_lines,
    holds_stock,
    planned_shipments,
    remainder,
    reservations_for,
)
from services.allocation.domain.payments import (
    CANCEL_REASONS,
    PAYMENT_DEADLINE,
    VOID,
    Ignore,
    PaymentState,
    Proceed,
    Remember,
    Void,
    on_arrival,
    on_deadline,
    on_payment,
    reservation_deadline,
)
from services.allocation.domain.sourcing import Partial, Plan, Rules, Shortage, Tier, method_after, widen
from services.allocation.domain.stock import BelowReserved, StockLevel, adjust, available


def rules_from(max_shipments: int, cost_per_km: str, policies: ChannelPolicies | None = None) -> Rules:
    """The sourcing rules: settings, and from the channel policy which channels' pickup orders may be
    transferred from a warehouse."""
    if policies is None:
        return Rules(max_shipments=max_shipments, cost_per_km=Decimal(cost_per_km))
    available = SourcingPolicy.SHIP_AVAILABLE
    return Rules(
        fallbacks=frozenset((n, _tiers(p)) for n, p in policies.channels.items()),
        fallbacks_default=_tiers(policies.defaults),
        max_shipments=max_shipments,
        cost_per_km=Decimal(cost_per_km),
        ship_available=frozenset((n, p.sourcing.policy is available) for n, p in policies.channels.items()),
        ship_available_default=policies.defaults.sourcing.policy is available,
        pickup_transfer=frozenset(
            (n, p.pickup.transfer_from_warehouse) for n, p in policies.channels.items()
        ),
        pickup_transfer_default=policies.defaults.pickup.transfer_from_warehouse,
    )


ReservationMinutes = Callable[[str], float]
"""Per channel: minutes a pending order's stock stays reserved waiting for its payment."""


def reservation_minutes_from(policies: ChannelPolicies) -> ReservationMinutes:
    """The channel policy's ``payment.reservation_minutes`` (the defaults for a channel not named)."""
    return lambda channel: policies.policy_for(channel).payment.reservation_minutes


def _tiers(policy: ChannelPolicy) -> tuple[Tier, ...]:
    return tuple(
        Tier(
            f.after_hours,
            f.shipping_method.value if f.shipping_method is not None else None,
            f.include_stores,
        )
        for f in policy.sourcing.fallbacks
    )


SOURCING_FALLBACK = "sourcing_fallback"
"""The durable timer kind of a backordered order's next fallback tier (key = order id)."""


def _default_minutes(channel: str) -> float:
    return 30.0


def request_for(order: OrderDetails, lines: Lines | None = None) -> sourcing.Request:
    """What to source: the whole order, or only ``lines`` (what waits after a parcel failed)."""
    address = order.shipping_address
    return sourcing.Request(
        lines=lines if lines is not None else tuple((line.sku, line.quantity) for line in order.lines),
        destination=sourcing.Destination(address.country, address.lat, address.lon),
        express=order.shipping_method is ShippingMethod.EXPRESS,
        pickup_at=order.pickup_location_id if order.shipping_method is ShippingMethod.PICKUP else None,
        channel=order.channel,
    )


def _as_lines(lines: Sequence[ShipmentLine]) -> Lines:
    return tuple((line.sku, line.quantity) for line in lines)


def _allocated(
    order_id: UUID,
    order: OrderDetails,
    shipments: Sequence[Shipment],
    cancel_request_id: str | None = None,
    waiting: Lines = (),
    edit_request_id: str | None = None,
) -> OrderAllocated:
    """`order.allocated` with every shipment the order has now, and the lines still waiting for stock."""
    return OrderAllocated(
        order_id=order_id,
        order=order,
        shipments=_public(shipments),
        cancel_request_id=cancel_request_id,
        backordered_lines=[ShipmentLine(sku=sku, quantity=q) for sku, q in waiting],
        edit_request_id=edit_request_id,
    )


def _public(shipments: Sequence[Shipment]) -> list[ShipmentContract]:
    return [
        ShipmentContract(
            shipment_id=s.shipment_id,
            location_id=s.location_id,
            lines=[ShipmentLine(sku=sku, quantity=q) for sku, q in s.lines],
        )
        for s in shipments
    ]


def _reserved(
    order_id: UUID,
    shipments: Sequence[Shipment],
    due_at: datetime | None,
    cancel_request_id: str | None = None,
) -> OrderReserved:
    """`order.reserved`: the stock is held for the order until its payment comes, or ``due_at``."""
    return OrderReserved(
        order_id=order_id,
        shipments=_public(shipments),
        expires_at=due_at or datetime.now(UTC),
        cancel_request_id=cancel_request_id,
    )


def _backordered(order_id: UUID, shortage: Shortage) -> OrderBackordered:
    reasons = [Reason(code=m.code, message=m.message, sku=m.sku) for m in shortage.missing]
    return OrderBackordered(order_id=order_id, reasons=reasons)


def _cancel_refused(fact: OrderCancelRequested, refusal: Refuse) -> OrderCancelRefused:
    return OrderCancelRefused(
        order_id=fact.order_id,
        request_id=fact.request_id,
        lines=fact.lines,
        reason=fact.reason,
        reasons=[Reason(code=refusal.code, message=refusal.message)],
    )


def _waiting_reason(sku: str, quantity: int) -> Reason:
    return Reason(code="insufficient_stock", message=f"{sku}: {quantity} wait for stock", sku=sku)


def _count(outcomes: Sequence[Plan | Partial | Shortage]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, Partial):
            metrics.count(metrics.RESERVATIONS, "partial")
        elif isinstance(outcome, Plan):
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
    outcomes = sourcing.plan_in_turn(requests, locations, available(levels), rules)
    return [o for o in outcomes if not isinstance(o, Partial)]  # whole plans only (partial=False)


async def allocate_orders(
    validated: Sequence[OrderValidated],
    uow: AllocationUnit,
    rules: Rules,
    minutes: ReservationMinutes = _default_minutes,
) -> list[list[Event]]:
    """Reserve stock for each validated order, in the order they came; an order that cannot be
    covered whole is backordered and reserves nothing — or, where the channel's policy is
    `ship_available`, reserves what is in stock now and backorders the rest (its own shipment later).

    Set-based: the stock rows (locked), the orders allocation knows already and the locations are
    read once for all of them, each order is planned in memory against what the orders before it
    took, and all reservations and allocations are written at once. An order seen before (a
    redelivery, or one cancelled before it was validated) causes nothing. An order placed before an
    erasure of its customer that arrives after it is kept and passed on erased.

    An order whose payment is pending gets a reservation deadline (a durable timer); its reserved
    stock waits for the payment (`order.reserved`) instead of going to fulfillment. One whose
    payment failed before it got here is cancelled and takes nothing."""
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
    payment = await _payments_on_arrival(orders, uow)
    erasures = await uow.erasures.covering(customers_of(fact.order for fact in orders))
    rows = []
    for fact in orders:
        if (state := payment.get(fact.order_id)) in VOID:
            assert state is not None
            rows.append(
                NewAllocation(fact.order_id, AllocationStatus.CANCELLED, 0, kept(fact.order, erasures))
            )
            results[first[fact.order_id]] = [_cancelled(fact.order_id, "", state)]
    orders = [fact for fact in orders if payment.get(fact.order_id) not in VOID]
    requests = [request_for(fact.order) for fact in orders]
    outcomes = sourcing.plan_in_turn(
        requests, await uow.locations.active(), available(levels), rules, partial=True
    )
    reservations = []
    for fact, outcome in zip(orders, outcomes, strict=True):
        caused: Event
        due_at = None
        if payment.get(fact.order_id) is PaymentState.PENDING:
            due_at = reservation_deadline(datetime.now(UTC), minutes(fact.order.channel))
            await _await_payment(fact.order_id, due_at, uow)
        order = kept(fact.order, erasures)
        if isinstance(outcome, Plan):
            reservations.extend(reservations_for(fact.order_id, FIRST_GENERATION, outcome))
            rows.append(NewAllocation(fact.order_id, AllocationStatus.ALLOCATED, FIRST_GENERATION, order))
            shipments = planned_shipments(fact.order_id, FIRST_GENERATION, outcome)
            if due_at is not None:
                caused = _reserved(fact.order_id, shipments, due_at)
            else:
                caused = _allocated(fact.order_id, order, shipments)
        elif isinstance(outcome, Partial):
            reservations.extend(reservations_for(fact.order_id, FIRST_GENERATION, outcome.plan))
            rows.append(
                NewAllocation(
                    fact.order_id,
                    AllocationStatus.BACKORDERED,
                    FIRST_GENERATION,
                    order,
                    pending=outcome.waiting,
                )
            )
            shipments = planned_shipments(fact.order_id, FIRST_GENERATION, outcome.plan)
            if due_at is not None:
                caused = _reserved(fact.order_id, shipments, due_at)
            else:
                caused = _allocated(fact.order_id, order, shipments, waiting=outcome.waiting)
        else:
            rows.append(NewAllocation(fact.order_id, AllocationStatus.BACKORDERED, 0, order))
            caused = _backordered(fact.order_id, outcome)
        if not isinstance(outcome, Plan):
            await _schedule_fallback(fact.order_id, fact.order.channel, uow, rules)
        results[first[fact.order_id]] = [caused]
    await uow.stock.reserve(reservations)
    await uow.allocations.add(rows)
    _count(outcomes)
    return results


async def _schedule_fallback(order_id: UUID, channel: str, uow: AllocationUnit, rules: Rules) -> None:
    """An order just backordered starts its channel's fallback tiers (if it has any) from now."""
    if tiers := rules.tiers(channel):
        due = datetime.now(UTC) + timedelta(hours=tiers[0].after_hours)
        await uow.timers.schedule(Timer(SOURCING_FALLBACK, str(order_id), due, {"tier": 0}))


async def _payments_on_arrival(
    orders: Sequence[OrderValidated], uow: AllocationUnit
) -> dict[UUID, PaymentState]:
    """The payment state each order starts with here (absent: none to track): `pending` as
    submitted, or what a payment event that came first said."""
    pending = [f.order_id for f in orders if f.order.payment.status == PaymentState.PENDING]
    remembered = await uow.payments.of(pending) if pending else {}
    states = {}
    for fact in orders:
        if fact.order_id not in pending:
            continue
        earlier = remembered.get(fact.order_id)
        state = on_arrival(earlier.state if earlier else None, fact.order.payment.status)
        if state is not None:
            states[fact.order_id] = state
    return states


async def _await_payment(order_id: UUID, due_at: datetime, uow: AllocationUnit) -> None:
    await uow.payments.set(order_id, PaymentRecord(PaymentState.PENDING, due_at))
    await uow.timers.schedule(Timer(PAYMENT_DEADLINE, str(order_id), due_at, {}))


def _cancelled(order_id: UUID, request_id: str, state: PaymentState | None) -> OrderCancelled:
    reasons = []
    if state is not None and state in CANCEL_REASONS:
        code, message = CANCEL_REASONS[state]
        reasons.append(Reason(code=code, message=message))
    return OrderCancelled(order_id=order_id, request_id=request_id, reasons=reasons)


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
    reached = await _reached(waiting, uow, rules)
    requests = [widen(request_for(w.order, w.pending), reached.get(w.order_id, ())) for w in waiting]
    outcomes = await _plan(requests, uow, rules)
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
    payments = await uow.payments.of([w.order_id for w in woken])
    woke: list[Event] = []
    for w in woken:
        shipments = current_shipments(held.get(w.order_id, []))
        record = payments.get(w.order_id)
        if record is not None and record.state is PaymentState.PENDING:
            woke.append(_reserved(w.order_id, shipments, record.due_at))
        else:
            woke.append(_allocated(w.order_id, _shipping_by(w.order, reached.get(w.order_id, ())), shipments))
    return woke


async def _reached(
    waiting: Sequence[Waiting], uow: AllocationUnit, rules: Rules
) -> dict[UUID, tuple[Tier, ...]]:
    """The fallback tiers each waiting order has reached (none for most)."""
    if not any(rules.tiers(w.order.channel) for w in waiting):
        return {}
    levels = await uow.fallbacks.of([w.order_id for w in waiting])
    return {
        w.order_id: rules.tiers(w.order.channel)[: levels[w.order_id] + 1]
        for w in waiting
        if w.order_id in levels
    }


def _shipping_by(order: OrderDetails, reached: Sequence[Tier]) -> OrderDetails:
    """The order as fulfillment should ship it: by the method the fallback tiers reached accept."""
    method = method_after(order.shipping_method.value, reached)
    if method == order.shipping_method.value:
        return order
    return order.model_copy(update={"shipping_method": ShippingMethod(method)})


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
        await _schedule_fallback(fact.order_id, order.channel, uow, rules)
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


async def request_cancel(
    fact: OrderCancelRequested, uow: AllocationUnit, rules: Rules | None = None
) -> list[Event]:
    """Cancel at once what holds no stock (an order allocation never saw, a backorder, lines of a
    backordered remainder); send the rest to fulfillment, which knows what has shipped."""
    allocation = await uow.allocations.lock(fact.order_id)
    held = []
    if allocation is not None and allocation.status is not AllocationStatus.CANCELLED:
        held = (await uow.allocations.reservations([fact.order_id])).get(fact.order_id, [])
    if allocation is not None and allocation.status is not AllocationStatus.CANCELLED and holds_stock(held):
        record = (await uow.payments.of([fact.order_id])).get(fact.order_id)
        if record is not None and record.state is PaymentState.PENDING:
            return await _cancel_awaiting_payment(fact, allocation, record, uow, rules)
    decision = decide_cancel(
        allocation.status if allocation else None,
        allocation.pending if allocation else None,
        holds_stock(held),
        _as_lines(fact.lines) if fact.lines is not None else None,
    )
    match decision:
        case Refuse() as refusal:
            return [_cancel_refused(fact, refusal)]
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
        # No request: fulfillment decided it itself (e.g. `not_collected`); its reason is the code.
        reasons = []
        if not fact.request_id and fact.reason:
            reasons = [Reason(code=fact.reason, message=f"cancelled: {fact.reason}")]
        out = [OrderCancelled(order_id=fact.order_id, request_id=fact.request_id, reasons=reasons)]
    else:
        waiting = remainder(allocation.status, allocation.pending)
        shipments = current_shipments(held)
        out = [_allocated(fact.order_id, allocation.order, shipments, fact.request_id, waiting)]
    return out + await _allocate_waiting(freed, uow, rules)


def _edit_refused(fact: OrderEditValidated | OrderEditAccepted, code: str, message: str) -> OrderEditRefused:
    return OrderEditRefused(
        order_id=fact.order_id, request_id=fact.request_id, reasons=[Reason(code=code, message=message)]
    )


def _skus(*orders: OrderDetails) -> list[str]:
    return sorted({line.sku for order in orders for line in order.lines})


def _with_own(levels: Sequence[StockLevel], held: Sequence[ReservedLine]) -> dict[tuple[str, str], int]:
    """What the order could have if it gave back what it holds: the free units plus its own."""
    free = dict(available(levels))
    for line in held:
        if line.status is ReservationStatus.RESERVED:
            key = (line.sku, line.location_id)
            free[key] = free.get(key, 0) + line.quantity
    return free


async def request_edit(fact: OrderEditValidated, uow: AllocationUnit, rules: Rules) -> list[Event]:
    """An edit of a wholly allocated order goes on to fulfillment if the edited order can be covered
    with the free stock and what the order holds now; nothing is reserved or released yet (that
    happens once fulfillment took the shipments out, in ``apply_edit``)."""
    allocation = await uow.allocations.lock(fact.order_id)
    if allocation is None or allocation.order is None or allocation.status is not AllocationStatus.ALLOCATED:
        return [_edit_refused(fact, "not_editable", "the order is not wholly allocated")]
    if allocation.pending:
        return [_edit_refused(fact, "not_editable", "part of the order waits for stock")]
    levels = await uow.stock.lock(_skus(allocation.order, fact.order))
    held = (await uow.allocations.reservations([fact.order_id])).get(fact.order_id, [])
    locations = await uow.locations.active()
    [outcome] = sourcing.plan_in_turn([request_for(fact.order)], locations, _with_own(levels, held), rules)
    if isinstance(outcome, Shortage):
        return [_edit_refused(fact, "insufficient_stock", "the edited order cannot be covered by the stock")]
    return [OrderEditForwarded(order_id=fact.order_id, request_id=fact.request_id, order=fact.order)]


async def apply_edit(fact: OrderEditAccepted, uow: AllocationUnit, rules: Rules) -> list[Event]:
    """Fulfillment took every shipment of the order out of its pipeline. In one transaction, with the
    stock of the old and the new skus locked: release what those shipments held and reserve the
    edited order (a new generation of shipments), so stock changes by exactly the difference and the
    reservation can never exceed what is on hand. If the stock went meanwhile, the order as it was
    is reserved again (what it just gave back covers it) and the edit is refused."""
    allocation = await uow.allocations.lock(fact.order_id)
    if allocation is None or allocation.order is None or allocation.status is AllocationStatus.CANCELLED:
        return [_edit_refused(fact, "already_final", "the order was cancelled meanwhile")]
    before = allocation.order
    await uow.stock.lock(_skus(before, fact.order))
    await uow.stock.release(
        [Release(s.shipment_id, line.sku, line.quantity) for s in fact.release for line in s.lines]
    )
    generation = allocation.generation + 1
    [outcome] = await _plan([request_for(fact.order)], uow, rules)
    edited = isinstance(outcome, Plan)
    order = fact.order if edited else before
    if not edited:
        [outcome] = await _plan([request_for(before)], uow, rules)
    out: list[Event] = []
    if isinstance(outcome, Plan):
        await uow.stock.reserve(reservations_for(fact.order_id, generation, outcome))
        await uow.allocations.update(
            [AllocationChange(fact.order_id, AllocationStatus.ALLOCATED, generation, None)]
        )
        held = (await uow.allocations.reservations([fact.order_id])).get(fact.order_id, [])
        out.append(
            _allocated(
                fact.order_id,
                order,
                current_shipments(held),
                edit_request_id=fact.request_id if edited else None,
            )
        )
    else:  # not even the order as it was: it waits for stock, oldest first, like any backorder
        await uow.allocations.update(
            [AllocationChange(fact.order_id, AllocationStatus.BACKORDERED, generation, None)]
        )
        out.append(_backordered(fact.order_id, outcome))
    _count([outcome])
    if edited:
        await uow.allocations.replace_order(fact.order_id, fact.order)
    else:
        out.append(_edit_refused(fact, "insufficient_stock", "the stock of the edited order went meanwhile"))
    return out + await _allocate_waiting(_skus(before), uow, rules)


async def _cancel_awaiting_payment(
    fact: OrderCancelRequested,
    allocation: Allocation,
    record: PaymentRecord,
    uow: AllocationUnit,
    rules: Rules | None,
) -> list[Event]:
    """An order whose stock waits for its payment never reached fulfillment: allocation cancels it
    at once. Whole, its stock is released; some lines, their units are given back (the oldest
    waiting backorders get them) and the rest stays reserved until the same deadline, re-announced
    as `order.reserved` carrying the request; lines that leave nothing cancel the order whole."""
    if fact.lines is not None:
        held = (await uow.allocations.reservations([fact.order_id])).get(fact.order_id, [])
        waiting = remainder(allocation.status, allocation.pending)
        given = give_back_lines(held, waiting, _as_lines(fact.lines))
        if isinstance(given, Refuse):
            return [_cancel_refused(fact, given)]
        freed = sorted({sku for _, sku, _ in given.units})
        await uow.stock.serialise(freed)
        await uow.stock.release([Release(shipment, sku, units) for shipment, sku, units in given.units])
        held = (await uow.allocations.reservations([fact.order_id])).get(fact.order_id, [])
        if holds_stock(held) or given.waiting:
            if waiting != given.waiting:
                status = AllocationStatus.BACKORDERED if given.waiting else AllocationStatus.ALLOCATED
                change = AllocationChange(fact.order_id, status, allocation.generation, given.waiting or None)
                await uow.allocations.update([change])
            left: Event
            if holds_stock(held):
                left = _reserved(fact.order_id, current_shipments(held), record.due_at, fact.request_id)
            else:  # only lines waiting for stock are left: a backorder (its payment still pending)
                left = OrderBackordered(
                    order_id=fact.order_id,
                    reasons=[_waiting_reason(sku, q) for sku, q in given.waiting],
                    cancel_request_id=fact.request_id,
                )
            return [left, *(await _allocate_waiting(freed, uow, rules) if rules is not None else [])]
        await uow.timers.cancel(PAYMENT_DEADLINE, str(fact.order_id))
        cancelled = await _release_and_cancel(fact.order_id, allocation, uow, rules, fact.request_id, None)
        return cancelled + (await _allocate_waiting(freed, uow, rules) if rules is not None else [])
    await uow.timers.cancel(PAYMENT_DEADLINE, str(fact.order_id))
    return await _release_and_cancel(fact.order_id, allocation, uow, rules, fact.request_id, None)


async def _release_and_cancel(
    order_id: UUID,
    allocation: Allocation,
    uow: AllocationUnit,
    rules: Rules | None,
    request_id: str,
    state: PaymentState | None,
) -> list[Event]:
    """Release every unit the order holds, cancel it, and give the units to the oldest backorders
    waiting for them (``rules`` None: only a caller without sourcing rules, e.g. a unit test)."""
    if allocation.status is AllocationStatus.CANCELLED:
        return []
    held = (await uow.allocations.reservations([order_id])).get(order_id, [])
    reserved = [r for r in held if r.status is ReservationStatus.RESERVED]
    freed = sorted({r.sku for r in reserved})
    await uow.stock.serialise(freed)
    await uow.stock.release([Release(r.shipment_id, r.sku, r.quantity) for r in reserved])
    await uow.allocations.update(
        [AllocationChange(order_id, AllocationStatus.CANCELLED, allocation.generation, None)]
    )
    cancelled: list[Event] = [_cancelled(order_id, request_id, state)]
    return cancelled + (await _allocate_waiting(freed, uow, rules) if rules is not None else [])


async def apply_payment(fact: OrderPaymentChanged, uow: AllocationUnit, rules: Rules) -> list[Event]:
    """A payment event: an order waiting for its payment goes to fulfillment (authorized, captured)
    or is cancelled with its stock released (failed, refunded); one allocation has not seen yet
    keeps the event for when it arrives; anything else changes nothing."""
    allocation = await uow.allocations.lock(fact.order_id)
    record = (await uow.payments.of([fact.order_id])).get(fact.order_id)
    incoming = PaymentState(fact.status)
    match on_payment(record.state if record else None, allocation is not None, incoming):
        case Remember():
            await uow.payments.set(fact.order_id, PaymentRecord(incoming))
            return []
        case Ignore():
            return []
        case Proceed():
            assert allocation is not None
            await uow.payments.set(fact.order_id, PaymentRecord(incoming))
            await uow.timers.cancel(PAYMENT_DEADLINE, str(fact.order_id))
            held = (await uow.allocations.reservations([fact.order_id])).get(fact.order_id, [])
            if allocation.order is None or not holds_stock(held):
                return []  # backordered whole: allocated as usual when stock arrives
            waiting = remainder(allocation.status, allocation.pending)
            return [_allocated(fact.order_id, allocation.order, current_shipments(held), waiting=waiting)]
        case Void():
            assert allocation is not None
            await uow.payments.set(fact.order_id, PaymentRecord(incoming))
            await uow.timers.cancel(PAYMENT_DEADLINE, str(fact.order_id))
            return await _release_and_cancel(fact.order_id, allocation, uow, rules, "", incoming)


async def expire_reservation(timer: Timer, uow: AllocationUnit, rules: Rules) -> list[Event]:
    """The reservation deadline passed: an order still waiting for its payment is cancelled
    (`payment_timeout`) and its units go to the oldest backorders waiting for them."""
    order_id = UUID(timer.key)
    allocation = await uow.allocations.lock(order_id)
    record = (await uow.payments.of([order_id])).get(order_id)
    if allocation is None or not isinstance(on_deadline(record.state if record else None), Void):
        return []
    await uow.payments.set(order_id, PaymentRecord(PaymentState.EXPIRED))
    metrics.count(metrics.RESERVATIONS, "expired")
    return await _release_and_cancel(order_id, allocation, uow, rules, "", PaymentState.EXPIRED)


async def fall_back(timer: Timer, uow: AllocationUnit, rules: Rules) -> list[Event]:
    """A backordered order reached its next fallback tier: from now on it is sourced as the tiers
    reached allow (e.g. express accepts a standard shipment, stores join), and it is tried at once;
    the next tier, if any, is scheduled. An order no longer backordered changes nothing."""
    order_id, tier = UUID(timer.key), int(timer.payload["tier"])
    allocation = await uow.allocations.lock(order_id)
    if (
        allocation is None
        or allocation.order is None
        or allocation.status is not AllocationStatus.BACKORDERED
    ):
        return []
    tiers = rules.tiers(allocation.order.channel)
    if tier >= len(tiers):
        return []
    await uow.fallbacks.reach(order_id, tier)
    if tier + 1 < len(tiers):
        since = timer.due_at - timedelta(hours=tiers[tier].after_hours)
        due = since + timedelta(hours=tiers[tier + 1].after_hours)
        await uow.timers.schedule(Timer(SOURCING_FALLBACK, timer.key, due, {"tier": tier + 1}))
    reached = tiers[: tier + 1]
    [outcome] = await _plan([widen(request_for(allocation.order, allocation.pending), reached)], uow, rules)
    if not isinstance(outcome, Plan):
        return []
    generation = allocation.generation + 1
    await uow.stock.reserve(reservations_for(order_id, generation, outcome))
    await uow.allocations.update([AllocationChange(order_id, AllocationStatus.ALLOCATED, generation, None)])
    _count([outcome])
    held = (await uow.allocations.reservations([order_id])).get(order_id, [])
    shipments = current_shipments(held)
    record = (await uow.payments.of([order_id])).get(order_id)
    if record is not None and record.state is PaymentState.PENDING:
        return [_reserved(order_id, shipments, record.due_at)]
    return [_allocated(order_id, _shipping_by(allocation.order, reached), shipments)]


async def erase_customer(request: ErasureRequested, uow: AllocationUnit) -> list[Event]:
    """Erase the details allocation keeps of the customer's orders placed before the request, once
    per request id; stock, reservations and statuses stay. Reports what it changed."""
    if not await uow.erasures.claim(Erasure.of(request)):
        return []
    orders = await uow.allocations.erase(request)
    erased = Erased(orders, orders)
    await uow.erasures.record(request.request_id, erased)
    return [applied(request, "allocation", erased)]
