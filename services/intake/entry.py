"""Intake's router: channel submissions (set-based), cancel requests, the facts that move statuses
(set-based), and erasure requests."""

from __future__ import annotations

from libs.contracts.orders import CancelRequested, OrderSubmitted
from libs.contracts.privacy import ErasureRequested
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.routing import ServiceRouter
from services.intake.adapters.store import PgIntakeUnit
from services.intake.app.ports import IntakeUnit
from services.intake.app.use_cases import (
    STATUS_FACTS,
    erase_customer,
    publish_statuses,
    record_submissions,
    request_cancel,
)
from services.intake.settings import IntakeSettings


def build_router(settings: IntakeSettings) -> ServiceRouter[IntakeUnit]:
    router: ServiceRouter[IntakeUnit] = ServiceRouter(SERVICE_TOPOLOGY["intake"], PgIntakeUnit)
    router.on_batch(OrderSubmitted)(record_submissions)
    router.on(CancelRequested)(request_cancel)
    router.on_batch(*STATUS_FACTS)(publish_statuses)
    router.on(ErasureRequested)(erase_customer)
    return router
