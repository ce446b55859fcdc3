"""Validation: checks every received order against the catalog, policy and payment."""

from __future__ import annotations

from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.service import ServiceDefinition
from services.validation.entry import build_router
from services.validation.settings import ValidationSettings

DEFINITION = ServiceDefinition(
    topology=SERVICE_TOPOLOGY["validation"],
    migrations="services.validation.adapters.migrations",
    settings=ValidationSettings,
    router=build_router,
)
