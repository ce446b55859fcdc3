"""Allocation's router: locations, stock adjustments, the facts about orders it follows, erasure requests.

Validated orders are allocated set-based, in chunks whose skus are locked first (in sku order, so
allocation processes wait for each other but never deadlock); every other fact finds its skus in
the database and gets a transaction of its own. Locations and adjustments also lock skus (to give
units to waiting backorders): one transaction per record, in lanes by key.
"""

from __future__ import annotations

from collections.abc import Sequence

from libs.contracts.envelope import Contract
from libs.contracts.inventory import LocationUpdated, StockAdjusted
from libs.contracts.lifecycle import (
    OrderCancelAccepted,
    OrderCancelRequested,
    OrderEditAccepted,
    OrderEditValidated,
    OrderPaymentChanged,
    OrderValidated,
    ShipmentFailed,
    ShipmentLost,
    ShipmentShipped,
)
from libs.contracts.privacy import ErasureRequested
from libs.contracts.returns import ReturnArrived
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.routing import Events, KeyedLanes, LockedChunks, Outcome, ServiceRouter
from libs.platform.timers import Timer
from services.allocation.adapters.store import PgAllocationUnit
from services.allocation.app.ports import AllocationUnit
from services.allocation.app.use_cases import (
    SOURCING_FALLBACK,
    adjust_stock,
    allocate_orders,
    apply_edit,
    apply_payment,
    erase_customer,
    expire_reservation,
    fail_shipment,
    fall_back,
    lose_shipment,
    release_cancelled,
    request_cancel,
    request_edit,
    reservation_minutes_from,
    restock_return,
    rules_from,
    ship_shipment,
    update_location,
)
from services.allocation.domain.payments import PAYMENT_DEADLINE
from services.allocation.settings import AllocationSettings


def skus_to_lock(fact: Contract) -> list[str] | None:
    """A validated order names its skus: many share a transaction that locks them first."""
    if isinstance(fact, OrderValidated):
        return sorted({line.sku for line in fact.order.lines})
    return None


ORDER_FACTS = LockedChunks(keys=skus_to_lock)


def build_router(settings: AllocationSettings) -> ServiceRouter[AllocationUnit]:
    rules = rules_from(settings.max_shipments, settings.cost_per_km, settings.channel_policies())
    minutes = reservation_minutes_from(settings.channel_policies())
    router: ServiceRouter[AllocationUnit] = ServiceRouter(SERVICE_TOPOLOGY["allocation"], PgAllocationUnit)

    @router.on(LocationUpdated, shape=KeyedLanes())
    async def on_location_updated(update: LocationUpdated, uow: AllocationUnit) -> Events:
        return await update_location(update, uow, rules)

    @router.on(StockAdjusted, shape=KeyedLanes())
    async def on_stock_adjusted(adjustment: StockAdjusted, uow: AllocationUnit) -> Events:
        return await adjust_stock(adjustment, uow, rules)

    @router.on_batch(OrderValidated, shape=ORDER_FACTS)
    async def on_orders_validated(
        validated: Sequence[OrderValidated], uow: AllocationUnit
    ) -> Sequence[Outcome]:
        return await allocate_orders(validated, uow, rules, minutes)

    @router.on(OrderEditValidated, shape=ORDER_FACTS)
    async def on_edit_validated(fact: OrderEditValidated, uow: AllocationUnit) -> Events:
        return await request_edit(fact, uow, rules)

    @router.on(OrderEditAccepted, shape=ORDER_FACTS)
    async def on_edit_accepted(fact: OrderEditAccepted, uow: AllocationUnit) -> Events:
        return await apply_edit(fact, uow, rules)

    @router.on(OrderCancelAccepted, shape=ORDER_FACTS)
    async def on_cancel_accepted(fact: OrderCancelAccepted, uow: AllocationUnit) -> Events:
        return await release_cancelled(fact, uow, rules)

    @router.on(ShipmentFailed, shape=ORDER_FACTS)
    async def on_shipment_failed(fact: ShipmentFailed, uow: AllocationUnit) -> Events:
        return await fail_shipment(fact, uow, rules)

    @router.on(ShipmentLost, shape=ORDER_FACTS)
    async def on_shipment_lost(fact: ShipmentLost, uow: AllocationUnit) -> Events:
        return await lose_shipment(fact, uow, rules)

    @router.on(ReturnArrived, shape=ORDER_FACTS)
    async def on_return_arrived(fact: ReturnArrived, uow: AllocationUnit) -> Events:
        return await restock_return(fact, uow, rules)

    @router.on(OrderCancelRequested, shape=ORDER_FACTS)
    async def on_cancel_requested(fact: OrderCancelRequested, uow: AllocationUnit) -> Events:
        return await request_cancel(fact, uow, rules)

    @router.on(OrderPaymentChanged, shape=ORDER_FACTS)
    async def on_payment_changed(fact: OrderPaymentChanged, uow: AllocationUnit) -> Events:
        return await apply_payment(fact, uow, rules)

    @router.on_timer(SOURCING_FALLBACK)
    async def on_sourcing_fallback(timer: Timer, uow: AllocationUnit) -> Events:
        return await fall_back(timer, uow, rules)

    @router.on_timer(PAYMENT_DEADLINE)
    async def on_payment_deadline(timer: Timer, uow: AllocationUnit) -> Events:
        return await expire_reservation(timer, uow, rules)

    router.on(ShipmentShipped, shape=ORDER_FACTS)(ship_shipment)
    router.on(ErasureRequested)(erase_customer)
    return router
