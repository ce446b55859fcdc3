"""Intake: takes channel orders, de-duplicates them, gives each an id and owns its public status."""

from __future__ import annotations

from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.service import ServiceDefinition
from services.intake.entry import build_router
from services.intake.settings import IntakeSettings

DEFINITION = ServiceDefinition(
    topology=SERVICE_TOPOLOGY["intake"],
    migrations="services.intake.adapters.migrations",
    settings=IntakeSettings,
    router=build_router,
)
