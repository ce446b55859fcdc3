"""Stage deadlines (SLAs): when a shipment's stage is due to end, and whether it is late. Pure.

Rules in words:
- A stage may declare `sla_hours`. A shipment entering such a stage is due to leave it
  `sla_hours` after it entered; one durable timer per shipment holds its current deadline (moving
  on to another stage with an SLA moves the timer).
- When the timer fires, the shipment is late if it is still in its pipeline, in that same stage,
  entered at that same moment (it did not move on, fail, or get cancelled meanwhile). A late
  shipment is reported once per stage visit.
- A pipeline may declare `ship_by_hours`: a shipment that has not reached the ship point
  (`ships_at`) that long after it entered the pipeline is late once (its own timer, set when it
  enters); one that shipped, failed or was cancelled by then is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.fulfillment.domain.pipelines import PipelineConfig
from services.fulfillment.domain.shipments import Shipment

STAGE_SLA = "stage_sla"
"""The durable timer kind of stage deadlines (key = shipment id)."""
SHIP_BY = "ship_by"
"""The durable timer kind of ship-by cut-offs (key = shipment id)."""


@dataclass(frozen=True)
class Deadline:
    shipment_id: str
    stage: str
    entered_at: datetime
    sla_hours: float

    @property
    def due_at(self) -> datetime:
        return self.entered_at + timedelta(hours=self.sla_hours)

    def payload(self) -> dict[str, Any]:
        return {"stage": self.stage, "entered_at": self.entered_at.isoformat(), "sla_hours": self.sla_hours}

    @classmethod
    def of(cls, shipment_id: str, payload: dict[str, Any]) -> Deadline:
        return cls(
            shipment_id,
            str(payload["stage"]),
            datetime.fromisoformat(str(payload["entered_at"])),
            float(payload["sla_hours"]),
        )


def deadline(shipment: Shipment, config: PipelineConfig) -> Deadline | None:
    """The deadline of the stage the shipment is in now, if that stage has one."""
    if not shipment.active:
        return None
    pipeline = config.get(shipment.pipeline)
    stage = pipeline.stages[pipeline.index(shipment.stage)]
    if stage.sla_hours is None:
        return None
    return Deadline(shipment.shipment_id, stage.name, shipment.stage_entered_at, stage.sla_hours)


def ship_by(shipment: Shipment, config: PipelineConfig) -> Deadline | None:
    """The ship-by cut-off of a shipment entering its pipeline, if the pipeline has one (the clock
    starts when it entered, in its first stage)."""
    pipeline = config.get(shipment.pipeline)
    if pipeline.ship_by_hours is None or not shipment.active:
        return None
    return Deadline(shipment.shipment_id, shipment.stage, shipment.stage_entered_at, pipeline.ship_by_hours)


def missed_ship_by(shipment: Shipment | None, config: PipelineConfig) -> bool:
    """Whether the shipment is still in its pipeline and short of the ship point."""
    return (
        shipment is not None
        and shipment.active
        and not config.get(shipment.pipeline).has_shipped(shipment.stage)
    )


def is_late(shipment: Shipment | None, due: Deadline) -> bool:
    """Whether the shipment is still where the deadline found it: same stage, same visit, active."""
    return (
        shipment is not None
        and shipment.active
        and shipment.stage == due.stage
        and shipment.stage_entered_at == due.entered_at
    )
