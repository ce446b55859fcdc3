"""Allocation's use cases: keep locations and stock, allocate validated orders, retry backorders."""

from __future__ import annotations

import uuid
from decimal import Decimal
from uuid import UUID

import orjson

from libs.contracts.inventory import LocationUpdated, StockAdjusted
from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderBackordered,
    OrderCancelAccepted,
    OrderCancelForwarded,
    OrderCancelled,
    OrderCancelRefused,
    OrderCancelRequested,
    ShipmentFailed,
    ShipmentShipped,
)
from libs.contracts.orders import OrderDetails, Reason, Shipment, ShipmentLine, ShippingMethod
from libs.platform import metrics
from libs.platform.messaging import Outgoing, Rejected
from services.allocation.adapters.ledger import PgOrderReservations, PgStockLedger
from services.allocation.domain import sourcing
from services.allocation.domain.sourcing import Plan, Rules, Shortage


def shipment_id(order_id: UUID, generation: int, location_id: str) -> str:
    """Stable: the same allocation of the same order always names its shipments the same."""
    return str(uuid.uuid5(order_id, f"{generation}/{location_id}"))


def request_for(order: OrderDetails, lines: list[tuple[str, int]] | None = None) -> sourcing.Request:
    """What to source: the whole order, or only ``lines`` (after a failed shipment)."""
    address = order.shipping_address
    return sourcing.Request(
        lines=tuple(lines) if lines is not None else tuple((line.sku, line.quantity) for line in order.lines),
        destination=sourcing.Destination(address.country, address.lat, address.lon),
        express=order.shipping_method is ShippingMethod.EXPRESS,
    )


async def update_location(
    ledger: PgStockLedger, update: LocationUpdated, rules: Rules, lifecycle_topic: str
) -> list[Outgoing]:
    """Keep the location; stock it holds that it can now ship (re-activated, more countries) goes to
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
    await ledger.upsert_location(location, update.name)
    if not update.active:
        return []
    return await allocate_waiting(
        ledger, await ledger.skus_in_stock_at(update.location_id), rules, lifecycle_topic
    )


async def _try_allocate(
    ledger: PgStockLedger,
    order_id: UUID,
    order: OrderDetails,
    rules: Rules,
    generation: int,
    lines: list[tuple[str, int]] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Plan | Shortage:
    request = request_for(order, lines)
    stock = await ledger.lock_stock(sorted(request.quantities()))
    available = {(row.sku, row.location_id): row.on_hand - row.reserved for row in stock}
    locations = [loc for loc in await ledger.locations() if loc.location_id not in exclude]
    outcome = sourcing.plan_shipments(request, locations, available, rules)
    if isinstance(outcome, Plan):
        await ledger.reserve(
            order_id, [(shipment_id(order_id, generation, s.location_id), s) for s in outcome.shipments]
        )
        metrics.count(metrics.RESERVATIONS, "allocated")
        units = sum(q for s in outcome.shipments for _, q in s.lines)
        metrics.count(metrics.RESERVED_UNITS, amount=units)
    return outcome


def _allocated(order_id: UUID, order: OrderDetails, plan: Plan, generation: int) -> OrderAllocated:
    return OrderAllocated(
        order_id=order_id,
        order=order,
        shipments=[
            Shipment(
                shipment_id=shipment_id(order_id, generation, s.location_id),
                location_id=s.location_id,
                lines=[ShipmentLine(sku=sku, quantity=q) for sku, q in s.lines],
            )
            for s in plan.shipments
        ],
    )


async def allocate_order(
    ledger: PgStockLedger, order_id: UUID, order: OrderDetails, rules: Rules, lifecycle_topic: str
) -> list[Outgoing]:
    """Reserve stock and plan shipments, or backorder the whole order and reserve nothing."""
    if await ledger.allocation_exists(order_id):
        return []
    skus = sorted({line.sku for line in order.lines})
    outcome = await _try_allocate(ledger, order_id, order, rules, generation=1)
    key = str(order_id)
    if isinstance(outcome, Shortage):
        await ledger.save_allocation(order_id, "backordered", order.model_dump_json(), skus, 0)
        metrics.count(metrics.RESERVATIONS, "backordered")
        reasons = [Reason(code=m.code, message=m.message, sku=m.sku) for m in outcome.missing]
        return [Outgoing.event(lifecycle_topic, key, OrderBackordered(order_id=order_id, reasons=reasons))]
    await ledger.save_allocation(order_id, "allocated", order.model_dump_json(), skus, 1)
    return [Outgoing.event(lifecycle_topic, key, _allocated(order_id, order, outcome, 1))]


async def adjust_stock(
    ledger: PgStockLedger, adjustment: StockAdjusted, rules: Rules, lifecycle_topic: str
) -> list[Outgoing]:
    """Apply a stock change once per adjustment id; new stock goes to waiting backorders, oldest first."""
    row = await ledger.lock_stock_row(adjustment.sku, adjustment.location_id)
    if await ledger.adjustment_applied(adjustment.adjustment_id):
        return []
    on_hand = adjustment.on_hand if adjustment.on_hand is not None else row.on_hand + (adjustment.delta or 0)
    if on_hand < row.reserved:
        raise Rejected(
            "adjustment_below_reserved",
            f"{adjustment.sku}@{adjustment.location_id}: on hand would be {on_hand}, {row.reserved} reserved",
        )
    await ledger.set_on_hand(adjustment.sku, adjustment.location_id, on_hand)
    await ledger.record_adjustment(
        adjustment.adjustment_id,
        adjustment.sku,
        adjustment.location_id,
        on_hand - row.on_hand,
        on_hand,
        adjustment.reason,
    )
    if on_hand <= row.on_hand:
        return []
    return await allocate_waiting(ledger, [adjustment.sku], rules, lifecycle_topic)


async def allocate_waiting(
    ledger: PgStockLedger, skus: list[str], rules: Rules, lifecycle_topic: str
) -> list[Outgoing]:
    """Give freed or new stock to backorders, oldest first; one that still cannot ship keeps waiting.

    Called wherever units become available: stock received or counted up, a reservation released
    (cancellation), a location (re-)activated."""
    if not skus:
        return []
    reservations = PgOrderReservations(ledger._conn)
    out: list[Outgoing] = []
    for waiting in await ledger.lock_waiting(skus):
        order = OrderDetails.model_validate_json(waiting.order_details)
        state = await reservations.lock_allocation(waiting.order_id)
        pending = _pending(state.pending_lines if state else None)
        generation = waiting.generation + 1
        outcome = await _try_allocate(ledger, waiting.order_id, order, rules, generation, pending)
        if isinstance(outcome, Plan):
            await reservations.set_status(waiting.order_id, "allocated", generation, None)
            out.append(await _current_allocation(reservations, waiting.order_id, order, lifecycle_topic))
    return out


def _pending(raw: str | None) -> list[tuple[str, int]] | None:
    return [(sku, int(q)) for sku, q in orjson.loads(raw)] if raw else None


async def _current_allocation(
    reservations: PgOrderReservations,
    order_id: UUID,
    order: OrderDetails,
    topic: str,
    cancel_request_id: str | None = None,
    backordered: list[tuple[str, int]] | None = None,
) -> Outgoing:
    """`order.allocated` with every shipment the order still has (reserved or already shipped),
    and the lines still waiting for stock, if any."""
    by_shipment: dict[str, Shipment] = {}
    for r in await reservations.reservations(order_id):
        if r.status not in ("reserved", "shipped"):
            continue
        shipment = by_shipment.setdefault(
            r.shipment_id, Shipment(shipment_id=r.shipment_id, location_id=r.location_id, lines=[])
        )
        shipment.lines.append(ShipmentLine(sku=r.sku, quantity=r.quantity))
    fact = OrderAllocated(
        order_id=order_id,
        order=order,
        shipments=list(by_shipment.values()),
        cancel_request_id=cancel_request_id,
        backordered_lines=[ShipmentLine(sku=sku, quantity=q) for sku, q in backordered or []],
    )
    return Outgoing.event(topic, str(order_id), fact)


async def ship_shipment(reservations: PgOrderReservations, fact: ShipmentShipped) -> list[Outgoing]:
    """Shipped units leave the stock: on hand and reserved both go down, `shipped` goes up."""
    await reservations.settle(fact.shipment_id, "shipped")
    return []


async def fail_shipment(
    reservations: PgOrderReservations, fact: ShipmentFailed, rules: Rules, topic: str
) -> list[Outgoing]:
    """Write the units off at the failing location and source them again elsewhere, or backorder them."""
    state = await reservations.lock_allocation(fact.order_id)
    if state is None or state.status == "cancelled":
        return []
    written_off = await reservations.settle(fact.shipment_id, "failed")
    if not written_off:
        return []
    order = OrderDetails.model_validate_json(state.order_details)
    lines = [(r.sku, r.quantity) for r in written_off]
    generation = state.generation + 1
    outcome = await _try_allocate(
        reservations, fact.order_id, order, rules, generation, lines, exclude=frozenset({fact.location_id})
    )
    if isinstance(outcome, Shortage):
        await reservations.set_status(fact.order_id, "backordered", generation, orjson.dumps(lines).decode())
        metrics.count(metrics.RESERVATIONS, "backordered")
        reasons = [Reason(code=m.code, message=m.message, sku=m.sku) for m in outcome.missing]
        return [
            Outgoing.event(
                topic, str(fact.order_id), OrderBackordered(order_id=fact.order_id, reasons=reasons)
            )
        ]
    await reservations.set_status(fact.order_id, "allocated", generation, None)
    return [await _current_allocation(reservations, fact.order_id, order, topic)]


async def request_cancel(
    reservations: PgOrderReservations, fact: OrderCancelRequested, topic: str
) -> list[Outgoing]:
    """Cancel at once what holds no stock; send the rest to fulfillment, which knows what has shipped."""
    key = str(fact.order_id)
    state = await reservations.lock_allocation(fact.order_id)

    def refused(code: str, message: str) -> list[Outgoing]:
        refusal = OrderCancelRefused(
            order_id=fact.order_id,
            request_id=fact.request_id,
            lines=fact.lines,
            reason=fact.reason,
            reasons=[Reason(code=code, message=message)],
        )
        return [Outgoing.event(topic, key, refusal)]

    if state is not None and state.status == "cancelled":
        return refused("already_cancelled", "the order is already cancelled")
    held = state is not None and any(
        r.status in ("reserved", "shipped") for r in await reservations.reservations(fact.order_id)
    )
    if not held:
        if fact.lines is not None:
            return refused(
                "partial_cancel_before_allocation",
                "lines can be cancelled once the order is allocated; cancel the whole order instead",
            )
        if state is None:
            await reservations.tombstone(fact.order_id)
        else:
            await reservations.set_status(fact.order_id, "cancelled", state.generation, None)
        return [
            Outgoing.event(topic, key, OrderCancelled(order_id=fact.order_id, request_id=fact.request_id))
        ]
    waiting = _pending(state.pending_lines) if state is not None and state.status == "backordered" else None
    if fact.lines is not None and waiting and _covers(waiting, fact.lines):
        # Lines of a backordered remainder hold no stock: cancelled here, nothing to release.
        assert state is not None
        left = _minus(waiting, fact.lines)
        await reservations.set_status(
            fact.order_id,
            "backordered" if left else "allocated",
            state.generation,
            orjson.dumps(left).decode() if left else None,
        )
        order = OrderDetails.model_validate_json(state.order_details)
        return [await _current_allocation(reservations, fact.order_id, order, topic, fact.request_id, left)]
    forwarded = OrderCancelForwarded(
        order_id=fact.order_id, request_id=fact.request_id, lines=fact.lines, reason=fact.reason
    )
    return [Outgoing.event(topic, key, forwarded)]


def _covers(waiting: list[tuple[str, int]], lines: list[ShipmentLine]) -> bool:
    available = dict(waiting)
    return all(available.get(line.sku, 0) >= line.quantity for line in lines)


def _minus(waiting: list[tuple[str, int]], lines: list[ShipmentLine]) -> list[tuple[str, int]]:
    left = dict(waiting)
    for line in lines:
        left[line.sku] -= line.quantity
    return [(sku, q) for sku, q in left.items() if q > 0]


async def release_cancelled(
    reservations: PgOrderReservations, fact: OrderCancelAccepted, rules: Rules, topic: str
) -> list[Outgoing]:
    """Release exactly the reserved units fulfillment took out of its pipelines."""
    state = await reservations.lock_allocation(fact.order_id)
    if state is None or state.status == "cancelled":
        return []
    freed = sorted({line.sku for shipment in fact.release for line in shipment.lines})
    await reservations.lock_skus(freed)
    for shipment in fact.release:
        for line in shipment.lines:
            await reservations.release(shipment.shipment_id, line.sku, line.quantity)
    still_held = [
        r for r in await reservations.reservations(fact.order_id) if r.status in ("reserved", "shipped")
    ]
    if fact.whole or not still_held:
        await reservations.set_status(fact.order_id, "cancelled", state.generation, None)
        cancelled = OrderCancelled(order_id=fact.order_id, request_id=fact.request_id)
        out = [Outgoing.event(topic, str(fact.order_id), cancelled)]
    else:
        order = OrderDetails.model_validate_json(state.order_details)
        waiting = _pending(state.pending_lines) if state.status == "backordered" else None
        out = [await _current_allocation(reservations, fact.order_id, order, topic, fact.request_id, waiting)]
    # The freed units go to the oldest waiting backorders, not to whichever order asks next.
    return out + await allocate_waiting(reservations, freed, rules, topic)


def rules_from(max_shipments: int, cost_per_km: str) -> Rules:
    return Rules(max_shipments=max_shipments, cost_per_km=Decimal(cost_per_km))
