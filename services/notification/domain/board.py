"""The fulfillment board's rules: columns per pipeline, which moves an operator may make, how old a
card is. Pure: the pipelines come in as data (fulfillment's published `pipelines.yaml`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

FAILED = "failed"
"""Not a column: a shipment updated to `failed` is re-sourced, and its order shows it."""


@dataclass(frozen=True)
class Pipeline:
    name: str
    stages: tuple[str, ...]
    sla_hours: Mapping[str, float] = field(default_factory=dict)
    """Per stage, the deadline after entering it (`sla_hours` in the pipelines file), where declared."""

    def sla(self, stage: str, since: datetime, now: datetime) -> tuple[str, datetime] | None:
        """The card's SLA state: `late` past the stage's deadline, `due` before it (with the due
        time); None for a stage without one. The same deadline fulfillment reports breaches of."""
        hours = self.sla_hours.get(stage)
        if hours is None:
            return None
        due = since + timedelta(hours=hours)
        return ("late" if now >= due else "due"), due

    def later_stages(self, stage: str | None) -> tuple[str, ...]:
        """Where an operator may move a parcel in ``stage``: forward only, as fulfillment accepts
        (skipping is fine); nothing from the last stage or from a stage the pipeline lacks."""
        if stage not in self.stages:
            return ()
        return self.stages[self.stages.index(stage) + 1 :]


def pipelines_of(config: Mapping[str, Any]) -> tuple[Pipeline, ...]:
    """The pipelines of a parsed pipelines file, in its order, `standard` first (the board's default)."""
    found = tuple(
        Pipeline(
            str(p["name"]),
            tuple(str(s["name"]) for s in p["stages"]),
            {str(s["name"]): float(s["sla_hours"]) for s in p["stages"] if s.get("sla_hours") is not None},
        )
        for p in config["pipelines"]
    )
    return tuple(sorted(found, key=lambda p: p.name != "standard"))


def may_move(pipeline: Pipeline, current: str | None, target: str) -> str | None:
    """Why a move is refused, or None: only to a later stage of the parcel's own pipeline."""
    if current is None:
        return "the shipment is not in a pipeline stage"
    if target not in pipeline.later_stages(current):
        return f"{target!r} is not a later stage than {current!r} in pipeline {pipeline.name!r}"
    return None


def age(since: datetime, now: datetime) -> str:
    """How long a card has been in its stage, as people read it: `45s`, `12m`, `3h 05m`, `2d 4h`."""
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 24:
        return f"{hours}h {minutes % 60:02d}m"
    return f"{hours // 24}d {hours % 24}h"


@dataclass(frozen=True)
class Card:
    """One shipment on the board."""

    shipment_id: str
    order_id: str
    channel: str
    external_id: str
    status: str
    stage: str
    lines: Sequence[Mapping[str, Any]]
    since: datetime


def columns(pipeline: Pipeline, cards: Sequence[Card]) -> list[tuple[str, list[Card]]]:
    """One column per stage, in pipeline order, oldest card first (the one waiting longest on top)."""
    by_stage: dict[str, list[Card]] = {stage: [] for stage in pipeline.stages}
    for card in cards:
        if card.stage in by_stage:
            by_stage[card.stage].append(card)
    return [(stage, sorted(found, key=lambda c: c.since)) for stage, found in by_stage.items()]
