"""Fulfillment: runs every shipment through its pipeline of stages and tells the order's progress."""

from __future__ import annotations

from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.service import ServiceDefinition
from services.fulfillment.entry import build_router
from services.fulfillment.settings import FulfillmentSettings

DEFINITION = ServiceDefinition(
    topology=SERVICE_TOPOLOGY["fulfillment"],
    migrations="services.fulfillment.adapters.migrations",
    settings=FulfillmentSettings,
    router=build_router,
)
