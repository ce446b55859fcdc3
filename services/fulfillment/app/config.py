"""The pipelines in force: the packaged `services/fulfillment/pipelines.yaml`, or an operator's file."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from services.fulfillment.domain.pipelines import PipelineConfig, parse_config


def load_pipelines(path: Path | None = None) -> PipelineConfig:
    """The packaged pipelines (package data, so an installed Baton has them too), or those of the
    file at ``path`` (same format); a config that could not work is refused here, at start-up."""
    return _packaged() if path is None else parse_config(yaml.safe_load(path.read_text()))


@cache
def _packaged() -> PipelineConfig:
    text = resources.files("services.fulfillment").joinpath("pipelines.yaml").read_text()
    return parse_config(yaml.safe_load(text))
