"""Shipments against their deadlines: a stage that took longer than its pipeline allows."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from libs.contracts.envelope import Event, Text


class SlaBreached(Event):
    """On `fulfillment.sla-breaches.v1` (key = order id): a shipment missed a deadline of its pipeline
    (``services/fulfillment/pipelines.yaml``): it stayed in a stage longer than the stage's
    `sla_hours` (``sla`` = `stage`), or had not reached the pipeline's ship point `ship_by_hours`
    after entering the pipeline (``sla`` = `ship_by`; ``stage`` is where it was).

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
    sla: Literal["stage", "ship_by"] = Field(
        default="stage",
        description="Which deadline: the stage's `sla_hours` or the pipeline's `ship_by_hours`",
    )
    sla_hours: float = Field(gt=0, description="The deadline, in hours after its clock started")
    stage_entered_at: AwareDatetime = Field(
        description="When the clock started: the shipment entered the stage (stage) or the pipeline (ship_by)"
    )
    due_at: AwareDatetime
    overdue_seconds: float = Field(ge=0, description="How late the shipment was when Baton noticed")
    eta: datetime | None = Field(default=None, description="The order's expected delivery, revised")

    def partition_key(self) -> str:
        return str(self.order_id)
