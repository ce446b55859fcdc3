"""Fulfillment's own `baton` command: the pipelines in force."""

from __future__ import annotations

import typer

from services.fulfillment.app.config import load_pipelines
from services.fulfillment.settings import FulfillmentSettings


def pipelines() -> None:
    """The fulfillment pipelines in force: selection, stages (with hours) and where a parcel ships."""
    source = FulfillmentSettings().pipelines_file
    config = load_pipelines(source)
    typer.echo(
        f"pipelines config version {config.version} ({source or 'services/fulfillment/pipelines.yaml'})"
    )
    for pipeline in config.pipelines:
        selection = ", ".join(f"{k}={v}" for k, v in pipeline.select.items()) or "everything else"
        stages = " -> ".join(f"{s.name}({s.hours:g}h)" for s in pipeline.stages)
        typer.echo(f"  {pipeline.name:10} select: {selection:28} ships at: {pipeline.ships_at:10} {stages}")
