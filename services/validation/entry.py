"""Validation's router: catalog updates, received orders (set-based), support's hold decisions,
erasure requests."""

from __future__ import annotations

from collections.abc import Sequence

from libs.contracts.catalog import ProductUpdated
from libs.contracts.lifecycle import OrderReceived
from libs.contracts.orders import HoldDecision
from libs.contracts.privacy import ErasureRequested
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.routing import Outcome, ServiceRouter
from services.validation.adapters.store import PgValidationStore
from services.validation.app.ports import ValidationUnit
from services.validation.app.use_cases import (
    decide_hold,
    erase_customer,
    policy_from,
    update_product,
    validate_orders,
)
from services.validation.settings import ValidationSettings


def build_router(settings: ValidationSettings) -> ServiceRouter[ValidationUnit]:
    policy = policy_from(settings.supported_countries, settings.hold_threshold)
    router: ServiceRouter[ValidationUnit] = ServiceRouter(SERVICE_TOPOLOGY["validation"], PgValidationStore)
    router.on(ProductUpdated)(update_product)
    router.on(HoldDecision)(decide_hold)
    router.on(ErasureRequested)(erase_customer)

    @router.on_batch(OrderReceived)
    async def on_orders_received(received: Sequence[OrderReceived], uow: ValidationUnit) -> Sequence[Outcome]:
        return await validate_orders(received, uow, policy)

    return router
