"""Fulfillment's own `baton` command: the pipelines in force."""

from __future__ import annotations

from libs.cli import output
from services.fulfillment.app.config import load_pipelines
from services.fulfillment.settings import FulfillmentSettings


def pipelines() -> None:
    """The fulfillment pipelines in force: selection, stages (with hours, and deadlines where a stage
    has `sla_hours`), where a parcel ships and its ship-by cut-off."""
    source = FulfillmentSettings().pipelines_file
    config = load_pipelines(source)
    heading = f"pipelines config version {config.version} ({source or 'services/fulfillment/pipelines.yaml'})"
    shown = output.table("pipeline", "select", "ships at", "stages (hours)", title=heading)
    plain = [heading]
    for pipeline in config.pipelines:
        selection = ", ".join(f"{k}={v}" for k, v in pipeline.select.items()) or "everything else"
        stages = " -> ".join(
            f"{s.name}({s.hours:g}h{'' if s.sla_hours is None else f', sla {s.sla_hours:g}h'})"
            for s in pipeline.stages
        )
        if pipeline.ship_by_hours is not None:
            stages += f"; ship by {pipeline.ship_by_hours:g}h"
        output.add_row(shown, pipeline.name, selection, pipeline.ships_at, stages)
        plain.append(f"  {pipeline.name:10} select: {selection:28} ships at: {pipeline.ships_at:10} {stages}")
    output.emit(shown, plain)
