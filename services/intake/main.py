"""Intake: takes channel orders, de-duplicates them, gives each an id and owns its public status."""

from __future__ import annotations

from faststream import FastStream

from libs.platform.service import ServiceDefinition, build_service_app
from libs.platform.settings import BatonSettings
from services.intake.entry import subscriptions

DEFINITION = ServiceDefinition(
    name="intake",
    migrations="services.intake.adapters.migrations",
    subscriptions=subscriptions,
)


def build_app(settings: BatonSettings) -> FastStream:
    return build_service_app(DEFINITION, settings)
