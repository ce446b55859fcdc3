"""Allocation: owns stock per location, reserves it for validated orders, retries backorders."""

from __future__ import annotations

from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.service import ServiceDefinition
from services.allocation.entry import build_router
from services.allocation.settings import AllocationSettings

DEFINITION = ServiceDefinition(
    topology=SERVICE_TOPOLOGY["allocation"],
    migrations="services.allocation.adapters.migrations",
    settings=AllocationSettings,
    router=build_router,
)
