"""Shipments against their deadlines: a stage that took longer than its pipeline allows."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from libs.contracts.envelope import Event, Text


class SlaBreached(Event):
    """On `fulfillment.sla-breaches.v1` (key = order id): a shipment stayed in a stage longer than the
    stage's `sla_hours` (``services/fulfillment/pipelines.yaml``).

    One event per shipment and stage visit, however often it is redelivered or the service restarts
    (a durable timer fires once). ``overdue_seconds`` is how late the shipment was when Baton
    noticed; ``eta`` the order's expected delivery, re-computed as if the late stage ended now (the
    order's status is re-published with it).
    """

    event_type: Literal["fulfillment.sla-breached"] = "fulfillment.sla-breached"
    order_id: UUID
    shipment_id: Text
    pipeline: Text
    stage: Text = Field(description="The stage the shipment is late in")
    sla_hours: float = Field(gt=0, description="The stage's deadline, in hours after the shipment entered it")
    stage_entered_at: AwareDatetime
    due_at: AwareDatetime
    overdue_seconds: float = Field(ge=0, description="How late the shipment was when Baton noticed")
    eta: datetime | None = Field(default=None, description="The order's expected delivery, revised")

    def partition_key(self) -> str:
        return str(self.order_id)
