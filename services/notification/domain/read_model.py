"""The status API's read model, folded from public events: what an order and its parcels look like now. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True)
class OrderView:
    """An order as the status API shows it. ``shipments`` empty: none given (the known ones stay)."""

    order_id: UUID
    channel: str
    external_id: str
    status: str
    version: int
    eta: datetime | None
    shipments: Sequence[Mapping[str, object]]
    updated_at: datetime


def fold_status(before: OrderView | None, after: OrderView) -> OrderView:
    """The highest version wins, whatever the order events arrive in; a newer status that gives no
    ETA or no shipments keeps the ones known."""
    if before is None:
        return after
    if before.version >= after.version:
        return before
    return replace(after, eta=after.eta or before.eta, shipments=after.shipments or before.shipments)


@dataclass(frozen=True)
class ShipmentStage:
    """Where one parcel is in its pipeline. ``stage`` None: unchanged (it left its pipeline)."""

    shipment_id: str
    order_id: UUID
    pipeline: str
    stage: str | None
    updated_at: datetime


def stage_after(change: str, entered_stage: str | None) -> str | None:
    """A parcel is in the stage it entered; one leaving its pipeline stays shown in its last stage."""
    return None if change == "left" else entered_stage


def fold_stage(before: ShipmentStage | None, after: ShipmentStage) -> ShipmentStage:
    """The latest change wins; its pipeline is the one it entered first."""
    if before is None:
        return after
    return replace(
        after, pipeline=before.pipeline, stage=after.stage if after.stage is not None else before.stage
    )
