"""Fulfillment: runs shipments through configured pipelines of stages and reports every move."""

from __future__ import annotations

from faststream import FastStream

from libs.platform.service import ServiceDefinition, build_service_app
from libs.platform.settings import BatonSettings
from services.fulfillment.entry import subscriptions

DEFINITION = ServiceDefinition(
    name="fulfillment",
    migrations="services.fulfillment.adapters.migrations",
    subscriptions=subscriptions,
)


def build_app(settings: BatonSettings) -> FastStream:
    return build_service_app(DEFINITION, settings)
