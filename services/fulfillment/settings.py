"""Fulfillment's settings: the platform's, plus where its pipelines come from (`BATON_PIPELINES_FILE`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from libs.platform.settings import BatonSettings


class FulfillmentSettings(BatonSettings):
    pipelines_file: Path | None = Field(
        default=None,
        description="A pipelines YAML used instead of the packaged services/fulfillment/pipelines.yaml "
        "(same format). Every fulfillment process must read the same file, and a pipeline that "
        "shipments are still in must not be removed from it",
    )
