"""Validation: checks every received order against the catalog, policy and payment."""

from __future__ import annotations

from faststream import FastStream

from libs.platform.service import ServiceDefinition, build_service_app
from libs.platform.settings import BatonSettings
from services.validation.entry import subscriptions

DEFINITION = ServiceDefinition(
    name="validation",
    migrations="services.validation.adapters.migrations",
    subscriptions=subscriptions,
)


def build_app(settings: BatonSettings) -> FastStream:
    return build_service_app(DEFINITION, settings)
