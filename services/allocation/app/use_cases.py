"""Allocation's use cases: keep locations and stock, allocate validated orders, retry backorders."""

from __future__ import annotations

import uuid
from decimal import Decimal
from uuid import UUID

from libs.contracts.inventory import LocationUpdated, StockAdjusted
from libs.contracts.lifecycle import OrderAllocated, OrderBackordered
from libs.contracts.orders import OrderDetails, Reason, Shipment, ShipmentLine, ShippingMethod
from libs.platform.messaging import Outgoing, Rejected
from services.allocation.adapters.ledger import PgStockLedger
from services.allocation.domain import sourcing
from services.allocation.domain.sourcing import Plan, Rules, Shortage


def shipment_id(order_id: UUID, generation: int, location_id: str) -> str:
    """Stable: the same allocation of the same order always names its shipments the same."""
    return str(uuid.uuid5(order_id, f"{generation}/{location_id}"))


def request_for(order: OrderDetails) -> sourcing.Request:
    address = order.shipping_address
    return sourcing.Request(
        lines=tuple((line.sku, line.quantity) for line in order.lines),
        destination=sourcing.Destination(address.country, address.lat, address.lon),
        express=order.shipping_method is ShippingMethod.EXPRESS,
    )


async def update_location(ledger: PgStockLedger, update: LocationUpdated) -> list[Outgoing]:
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
    return []


async def _try_allocate(
    ledger: PgStockLedger, order_id: UUID, order: OrderDetails, rules: Rules, generation: int
) -> Plan | Shortage:
    request = request_for(order)
    stock = await ledger.lock_stock(sorted(request.quantities()))
    available = {(row.sku, row.location_id): row.on_hand - row.reserved for row in stock}
    outcome = sourcing.plan_shipments(request, await ledger.locations(), available, rules)
    if isinstance(outcome, Plan):
        await ledger.reserve(
            order_id, [(shipment_id(order_id, generation, s.location_id), s) for s in outcome.shipments]
        )
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
    """Give freed or new stock to backorders, oldest first; one that still cannot ship keeps waiting."""
    out: list[Outgoing] = []
    for waiting in await ledger.lock_waiting(skus):
        order = OrderDetails.model_validate_json(waiting.order_details)
        generation = waiting.generation + 1
        outcome = await _try_allocate(ledger, waiting.order_id, order, rules, generation)
        if isinstance(outcome, Plan):
            await ledger.save_allocation(
                waiting.order_id,
                "allocated",
                waiting.order_details,
                sorted({line.sku for line in order.lines}),
                generation,
            )
            out.append(
                Outgoing.event(
                    lifecycle_topic,
                    str(waiting.order_id),
                    _allocated(waiting.order_id, order, outcome, generation),
                )
            )
    return out


def rules_from(max_shipments: int, cost_per_km: str) -> Rules:
    return Rules(max_shipments=max_shipments, cost_per_km=Decimal(cost_per_km))
