"""Validation's own `baton` command: the rules in force (built-in and plugins) and their codes."""

from __future__ import annotations

import typer

from libs.policy import ConfigurationRefused
from services.validation.app.plugins import load_rules
from services.validation.domain.rules import HOLD_RULES, RULES
from services.validation.settings import ValidationSettings


def list_rules() -> None:
    """The validation rules in force, as this environment's validation service would load them:
    built-in rules, then plugin rules (installed packages' `baton.validation_rules` entry points and
    BATON_VALIDATION_RULES) with their reason codes and where they come from."""
    settings = ValidationSettings()
    try:
        plugins = load_rules(settings.rule_paths, settings.disabled_rules)
    except ConfigurationRefused as refused:
        typer.echo(f"baton: {refused}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{'rule':28} {'effect':7} {'codes':30} source")
    for rule in RULES:
        typer.echo(f"{rule.__name__:28} {'reject':7} {rule.__name__:30} built-in")
    for rule in HOLD_RULES:
        typer.echo(f"{rule.__name__:28} {'hold':7} {rule.__name__:30} built-in")
    for loaded in plugins:
        codes = ",".join(sorted(loaded.rule.codes))
        typer.echo(f"{loaded.rule.name:28} {loaded.rule.effect.value:7} {codes:30} {loaded.source}")
    if settings.disabled_rules:
        typer.echo(f"disabled: {', '.join(settings.disabled_rules)}")
