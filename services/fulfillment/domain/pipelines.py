"""Fulfillment pipelines as a state machine over configured stages. Pure: no I/O.

Rules in words:
- A shipment goes to the first pipeline whose selection matches its shipping method, location kind
  and channel; a missing selection key matches anything.
- It enters the pipeline's first stage. Updates move it forward only; skipping stages is allowed,
  going back (or staying) is refused with a reason. `failed` takes it out from any stage before
  `ships_at`. The last stage ends the pipeline.
- The ship point: a shipment at `ships_at` or later has left its location (it can no longer fail
  or be cancelled); a move that reaches or passes `ships_at` is the moment the parcel shipped.
- The order is `ready_for_pickup` when nothing has left yet and every parcel waits at
  `ready_for_pickup` (click-and-collect); otherwise it is `in_fulfillment` once any shipment is in a pipeline, `partially_shipped` once some
  but not all of it has left (a shipment still before `ships_at`, or a failed parcel not yet
  sourced again), `shipped` once every part reached `ships_at`, `delivered` once all reached the
  last stage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Literal

FAILED = "failed"
READY_FOR_PICKUP = "ready_for_pickup"
"""The stage at which a click-and-collect parcel waits at its store for the customer."""
NOT_COLLECTED = "not_collected"
"""Why a parcel left its pipeline when the customer did not collect it in time."""
EXCEPTION = "exception"
"""Reserved like `failed`: a carrier's in-transit exception (lost, damaged, returned to sender)."""

Progress = Literal[
    "in_fulfillment", "partially_shipped", "shipped", "delivered", "ready_for_pickup", "refunded"
]
"""Where an order stands in fulfillment as a whole (the words of ``OrderStatus`` it can announce)."""


@dataclass(frozen=True)
class Stage:
    name: str
    hours: float
    sla_hours: float | None = None
    """A shipment in this stage longer than this is late (an SLA breach); None: no deadline."""


@dataclass(frozen=True)
class Pipeline:
    name: str
    stages: tuple[Stage, ...]
    ships_at: str
    select: Mapping[str, str] = field(default_factory=dict)
    ship_by_hours: float | None = None
    """A shipment that has not reached `ships_at` this long after entering the pipeline is late."""

    @property
    def first(self) -> str:
        return self.stages[0].name

    @property
    def last(self) -> str:
        return self.stages[-1].name

    def index(self, stage: str) -> int:
        return [s.name for s in self.stages].index(stage)

    def has(self, stage: str) -> bool:
        return any(s.name == stage for s in self.stages)

    def has_shipped(self, stage: str) -> bool:
        """At or past the ship point: the parcel has left its location."""
        return self.index(stage) >= self.index(self.ships_at)

    def ships_between(self, from_stage: str, to_stage: str) -> bool:
        """A move from ``from_stage`` to ``to_stage`` reaches or passes the ship point."""
        return not self.has_shipped(from_stage) and self.has_shipped(to_stage)

    def matches(self, facts: Mapping[str, str]) -> bool:
        return all(facts.get(key) == value for key, value in self.select.items())


@dataclass(frozen=True)
class PipelineConfig:
    version: int
    pipelines: tuple[Pipeline, ...]
    transit_km_per_day: float = 600.0

    def select(self, shipping_method: str, location_kind: str, channel: str) -> Pipeline:
        facts = {"shipping_method": shipping_method, "location_kind": location_kind, "channel": channel}
        for pipeline in self.pipelines:
            if pipeline.matches(facts):
                return pipeline
        raise LookupError(f"no pipeline matches {facts}")

    def get(self, name: str) -> Pipeline:
        """The pipeline of that name; a shipment stored under a name the config no longer has is an
        operator's error (a pipeline removed while shipments were in it), said in words."""
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        raise LookupError(f"no pipeline named {name!r} in the pipelines config")


def _deadline(where: str, value: Any) -> float | None:
    """A deadline in hours (`sla_hours`, `ship_by_hours`): absent, or a positive number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where} must be a positive number")
    return float(value)


def parse_config(raw: Mapping[str, Any]) -> PipelineConfig:
    """Build a config from its YAML form, refusing ones that could not work."""
    pipelines = []
    for p in raw["pipelines"]:
        stages = tuple(
            Stage(
                s["name"],
                float(s.get("hours", 0)),
                _deadline(f"pipeline {p['name']}, stage {s['name']}: sla_hours", s.get("sla_hours")),
            )
            for s in p["stages"]
        )
        names = [s.name for s in stages]
        if len(stages) < 2 or len(set(names)) != len(names) or FAILED in names or EXCEPTION in names:
            raise ValueError(
                f"pipeline {p['name']}: needs two or more distinct stages, none named {FAILED!r} or {EXCEPTION!r}"
            )
        if p["ships_at"] not in names:
            raise ValueError(f"pipeline {p['name']}: ships_at {p['ships_at']!r} is not one of its stages")
        ship_by = _deadline(f"pipeline {p['name']}: ship_by_hours", p.get("ship_by_hours"))
        pipelines.append(Pipeline(p["name"], stages, p["ships_at"], dict(p.get("select") or {}), ship_by))
    if not pipelines or pipelines[-1].select:
        raise ValueError(
            "the last pipeline must select everything (an empty `select`) so no shipment is left out"
        )
    return PipelineConfig(int(raw["version"]), tuple(pipelines), float(raw.get("transit_km_per_day", 600)))


class MoveKind(Enum):
    MOVED = "moved"
    LEFT = "left"  # reached the last stage
    FAILED = "failed"
    STAYED = "stayed"  # a carrier's new ETA, no move


@dataclass(frozen=True)
class Move:
    kind: MoveKind
    from_stage: str
    to_stage: str


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


def advance(pipeline: Pipeline, current: str, target: str, *, active: bool = True) -> Move | Refusal:
    """Where an update takes a shipment, or why it cannot."""
    if not active:
        return Refusal("shipment_not_active", f"shipment already left the {pipeline.name} pipeline")
    if target == FAILED:
        if pipeline.has_shipped(current):
            return Refusal("already_shipped", f"cannot fail a shipment at {current!r}")
        return Move(MoveKind.FAILED, current, FAILED)
    if not pipeline.has(target):
        return Refusal("unknown_stage", f"{target!r} is not a stage of the {pipeline.name} pipeline")
    if pipeline.index(target) <= pipeline.index(current):
        return Refusal("stage_backwards", f"{pipeline.name}: cannot go from {current!r} to {target!r}")
    return Move(MoveKind.LEFT if target == pipeline.last else MoveKind.MOVED, current, target)


@dataclass(frozen=True)
class ShipmentState:
    pipeline: Pipeline
    stage: str
    active: bool


def order_progress(shipments: Sequence[ShipmentState], awaiting_resource: bool = False) -> Progress | None:
    """The order's status from its shipments (None: nothing in a pipeline).

    ``awaiting_resource``: part of the order is not in any shipment (a parcel failed and its lines
    are being sourced again or wait for stock) — the order cannot be `shipped` or `delivered`.
    Nothing left in a pipeline or delivered, nothing awaited, and a parcel lost on its way (it left
    its pipeline after shipping): the order was `refunded`."""
    active = [s for s in shipments if s.active or s.stage == s.pipeline.last]
    if not active:
        lost = any(
            not s.active and s.pipeline.has(s.stage) and s.pipeline.has_shipped(s.stage) for s in shipments
        )
        return "refunded" if lost and not awaiting_resource else None
    left = [s for s in active if s.pipeline.has_shipped(s.stage)]
    if not left and not awaiting_resource and all(s.stage == READY_FOR_PICKUP for s in active):
        return "ready_for_pickup"
    if len(left) < len(active) or awaiting_resource:
        return "partially_shipped" if left else "in_fulfillment"
    if all(s.stage == s.pipeline.last for s in active):
        return "delivered"
    return "shipped"


def eta(
    pipeline: Pipeline,
    stage: str,
    since: datetime,
    distance_km: float | None,
    km_per_day: float,
    now: datetime | None = None,
) -> datetime:
    """Remaining hours of this and later stages, plus transit time for the distance. Given ``now``,
    a stage that is running late is taken to end now, not when it should have."""
    at = pipeline.index(stage)
    current_ends = since + timedelta(hours=pipeline.stages[at].hours)
    if now is not None and now > current_ends:
        current_ends = now
    later = sum(s.hours for s in pipeline.stages[at + 1 :])
    transit_days = (distance_km or 0.0) / km_per_day
    return current_ends + timedelta(hours=later) + timedelta(days=math.ceil(transit_days * 4) / 4)
