"""Channels files for test fleets: the packaged policy with some defaults changed."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from libs.policy.channels import load_policies


def channels_file(directory: Path, channels: dict[str, Any] | None = None, **defaults: Any) -> Path:
    """Write the packaged channels file with ``defaults`` (and ``channels`` entries) replaced, check
    it as a service would, and return its path (for ``BATON_CHANNELS_FILE``)."""
    raw = yaml.safe_load(resources.files("libs.policy").joinpath("channels.yaml").read_text())
    raw["defaults"].update(defaults)
    raw["channels"].update(channels or {})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "channels.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_policies(path)
    return path
