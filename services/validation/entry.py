"""Validation's router: catalog updates, received orders (set-based), support's hold decisions,
erasure requests."""

from __future__ import annotations

from collections.abc import Sequence

from libs.contracts.catalog import ProductUpdated
from libs.contracts.envelope import Event
from libs.contracts.lifecycle import OrderEditRequested, OrderReceived
from libs.contracts.orders import HoldDecision
from libs.contracts.privacy import ErasureRequested
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.routing import Outcome, ServiceRouter
from services.validation.adapters.store import PgValidationStore
from services.validation.app.plugins import load_rules
from services.validation.app.ports import ValidationUnit
from services.validation.app.use_cases import (
    PRUNE_DAILY_UNITS,
    check_edit,
    decide_hold,
    erase_customer,
    policy_from,
    prune_daily_units,
    update_product,
    validate_orders,
)
from services.validation.settings import ValidationSettings


def build_router(settings: ValidationSettings) -> ServiceRouter[ValidationUnit]:
    policy = policy_from(settings.channel_policies())
    plugins = tuple(loaded.rule for loaded in load_rules(settings.rule_paths, settings.disabled_rules))
    daily = any(rule.uses_daily_units for rule in plugins)
    router: ServiceRouter[ValidationUnit] = ServiceRouter(SERVICE_TOPOLOGY["validation"], PgValidationStore)
    router.on(ProductUpdated)(update_product)
    router.on_timer(PRUNE_DAILY_UNITS)(prune_daily_units)
    router.on(ErasureRequested)(erase_customer)

    @router.on(HoldDecision)
    async def on_hold_decision(decision: HoldDecision, uow: ValidationUnit) -> Sequence[Event]:
        return await decide_hold(decision, uow, count_daily_units=daily)

    @router.on_batch(OrderReceived)
    async def on_orders_received(received: Sequence[OrderReceived], uow: ValidationUnit) -> Sequence[Outcome]:
        return await validate_orders(received, uow, policy, plugins)

    @router.on(OrderEditRequested)
    async def on_edit_requested(fact: OrderEditRequested, uow: ValidationUnit) -> Sequence[Event]:
        return await check_edit(fact, uow, policy, plugins)

    return router
