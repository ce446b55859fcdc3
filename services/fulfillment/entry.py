"""Fulfillment's router: locations, allocations (set-based), forwarded cancels, stage updates (set-based)."""

from __future__ import annotations

from collections.abc import Sequence

from libs.contracts.envelope import Event
from libs.contracts.fulfillment import FulfillmentUpdate
from libs.contracts.inventory import LocationUpdated
from libs.contracts.lifecycle import OrderAllocated, OrderCancelForwarded, OrderEditForwarded
from libs.contracts.returns import ReturnReceived, ReturnRequested
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.routing import Outcome, ServiceRouter
from libs.platform.timers import Timer
from libs.policy.channels import InTransitException, Returns
from services.fulfillment.adapters.store import PgFulfillmentUnit
from services.fulfillment.app.config import load_pipelines
from services.fulfillment.app.ports import FulfillmentUnit
from services.fulfillment.app.returns import receive_return, request_return
from services.fulfillment.app.use_cases import (
    PICKUP_EXPIRY,
    apply_updates,
    decide_cancel,
    decide_edit,
    expire_pickup,
    receive_allocations,
    ship_by_missed,
    stage_late,
    update_location,
)
from services.fulfillment.domain.sla import SHIP_BY, STAGE_SLA
from services.fulfillment.settings import FulfillmentSettings


def build_router(settings: FulfillmentSettings) -> ServiceRouter[FulfillmentUnit]:
    config = load_pipelines(settings.pipelines_file)
    policies = settings.channel_policies()

    def returns_policy(channel: str) -> Returns:
        return policies.policy_for(channel).returns

    def reships(channel: str) -> bool:
        return policies.policy_for(channel).in_transit_exception is InTransitException.RESHIP

    def collect_within(channel: str) -> float:
        return policies.policy_for(channel).pickup.collect_within_days

    router: ServiceRouter[FulfillmentUnit] = ServiceRouter(SERVICE_TOPOLOGY["fulfillment"], PgFulfillmentUnit)
    router.on(LocationUpdated)(update_location)

    @router.on_timer(SHIP_BY)
    async def on_ship_by_missed(timer: Timer, uow: FulfillmentUnit) -> list[Event]:
        return await ship_by_missed(timer, uow, config)

    @router.on_timer(STAGE_SLA)
    async def on_stage_late(timer: Timer, uow: FulfillmentUnit) -> list[Event]:
        return await stage_late(timer, uow, config)

    @router.on_batch(OrderAllocated)
    async def on_orders_allocated(
        allocated: Sequence[OrderAllocated], uow: FulfillmentUnit
    ) -> Sequence[Outcome]:
        return await receive_allocations(allocated, uow, config)

    @router.on(OrderCancelForwarded)
    async def on_cancel_forwarded(request: OrderCancelForwarded, uow: FulfillmentUnit) -> list[Event]:
        return await decide_cancel(request, uow, config)

    @router.on(OrderEditForwarded)
    async def on_edit_forwarded(request: OrderEditForwarded, uow: FulfillmentUnit) -> list[Event]:
        return await decide_edit(request, uow, config)

    @router.on_batch(FulfillmentUpdate)
    async def on_fulfillment_updates(
        updates: Sequence[FulfillmentUpdate], uow: FulfillmentUnit
    ) -> Sequence[Outcome]:
        return await apply_updates(updates, uow, config, reships, collect_within)

    @router.on_timer(PICKUP_EXPIRY)
    async def on_pickup_expiry(timer: Timer, uow: FulfillmentUnit) -> list[Event]:
        return await expire_pickup(timer, uow, config)

    @router.on(ReturnRequested)
    async def on_return_requested(request: ReturnRequested, uow: FulfillmentUnit) -> list[Event]:
        return await request_return(request, uow, config, returns_policy)

    @router.on(ReturnReceived)
    async def on_return_received(received: ReturnReceived, uow: FulfillmentUnit) -> list[Event]:
        return await receive_return(received, uow, config, returns_policy)

    return router
