"""Intake's router: channel submissions (set-based), cancel requests, the facts that move statuses
(set-based), and erasure requests."""

from __future__ import annotations

from libs.contracts.orders import CancelRequested, EditRequested, OrderSubmitted
from libs.contracts.payments import PaymentUpdate
from libs.contracts.privacy import ErasureRequested
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.routing import ServiceRouter
from services.intake.adapters.store import PgIntakeUnit
from services.intake.app.ports import IntakeUnit
from services.intake.app.use_cases import (
    STATUS_FACTS,
    erase_customer,
    pass_payment_on,
    publish_statuses,
    record_submissions,
    request_cancel,
    request_edit,
)
from services.intake.settings import IntakeSettings


def build_router(settings: IntakeSettings) -> ServiceRouter[IntakeUnit]:
    router: ServiceRouter[IntakeUnit] = ServiceRouter(SERVICE_TOPOLOGY["intake"], PgIntakeUnit)
    router.on_batch(OrderSubmitted)(record_submissions)
    router.on(CancelRequested)(request_cancel)
    router.on(EditRequested)(request_edit)
    router.on(PaymentUpdate)(pass_payment_on)
    router.on_batch(*STATUS_FACTS)(publish_statuses)
    router.on(ErasureRequested)(erase_customer)
    return router
