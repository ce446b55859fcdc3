"""``baton config``: the per-channel policy in force, and a check of a policy file before it ships."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from libs.policy.channels import ChannelPolicies, ChannelPolicy, PolicyFileRefused, load_policies

config_app = typer.Typer(no_args_is_help=True, help="Per-channel policy (BATON_CHANNELS_FILE).")

FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="A channels file to read instead of BATON_CHANNELS_FILE / the packaged one"),
]


def _load(file: Path | None) -> ChannelPolicies:
    from libs.platform.settings import BatonSettings

    try:
        return load_policies(file if file is not None else BatonSettings().channels_file)
    except PolicyFileRefused as refused:
        typer.echo(f"baton: {refused}", err=True)
        raise typer.Exit(1) from None


def _plain(policy: ChannelPolicy) -> dict[str, Any]:
    data = policy.model_dump(mode="json")
    data["supported_countries"] = sorted(data["supported_countries"])
    return data


def _annotate(data: dict[str, Any], own: dict[str, Any], prefix: str = "") -> list[str]:
    """YAML lines of the effective policy, each value the channel sets itself marked ``# channel``."""
    lines: list[str] = []
    for key, value in data.items():
        indent = "  " * prefix.count(".")
        mine = key in own
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.extend(_annotate(value, own.get(key) or {} if mine else {}, f"{prefix}{key}."))
            continue
        rendered = yaml.safe_dump({key: value}, default_flow_style=True, width=10_000).strip()[1:-1]
        lines.append(f"{indent}{rendered}{'   # channel' if mine else ''}")
    return lines


@config_app.command("show")
def show(
    channel: Annotated[str | None, typer.Option(help="The channel whose policy to show")] = None,
    file: FileOption = None,
) -> None:
    """The policy in force for a channel (values it sets itself marked ``# channel``), or the
    defaults and the channels the file names."""
    policies = _load(file)
    typer.echo(f"# channels file {policies.source}, version {policies.version}")
    if channel is None:
        typer.echo(f"# channels named: {', '.join(sorted(policies.channels)) or 'none'}")
        typer.echo("defaults:")
        typer.echo("\n".join("  " + line for line in _annotate(_plain(policies.defaults), {})))
        return
    if channel not in policies.channels:
        typer.echo(f"# channel {channel} is not named in the file: it gets the defaults")
    typer.echo(f"{channel}:")
    own = dict(policies.overrides.get(channel, {}))
    typer.echo("\n".join("  " + line for line in _annotate(_plain(policies.policy_for(channel)), own)))


@config_app.command("check")
def check(file: Annotated[Path, typer.Argument(help="The channels file to check")]) -> None:
    """Validate a channels file as every service will at start-up (exit 1 with the first mistake)."""
    policies = _load(file)
    typer.echo(f"{file}: version {policies.version}, {len(policies.channels)} channels: ok")
