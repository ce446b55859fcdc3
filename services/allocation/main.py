"""Allocation: owns stock per sku and location, plans shipments and reserves without overselling."""

from __future__ import annotations

from faststream import FastStream

from libs.platform.service import ServiceDefinition, build_service_app
from libs.platform.settings import BatonSettings
from services.allocation.entry import subscriptions

DEFINITION = ServiceDefinition(
    name="allocation",
    migrations="services.allocation.adapters.migrations",
    subscriptions=subscriptions,
)


def build_app(settings: BatonSettings) -> FastStream:
    return build_service_app(DEFINITION, settings)
