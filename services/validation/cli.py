"""Validation's own `baton` command: the rules in force (built-in and plugins) and their codes."""

from __future__ import annotations

import typer

from libs.cli import output
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
    rows = [(rule.__name__, "reject", rule.__name__, "built-in") for rule in RULES]
    rows += [(rule.__name__, "hold", rule.__name__, "built-in") for rule in HOLD_RULES]
    rows += [
        (loaded.rule.name, loaded.rule.effect.value, ",".join(sorted(loaded.rule.codes)), loaded.source)
        for loaded in plugins
    ]
    shown = output.table("rule", "effect", "codes", "source")
    for row in rows:
        output.add_row(shown, *row)
    output.emit(
        shown,
        [f"{'rule':28} {'effect':7} {'codes':30} source"]
        + [f"{name:28} {effect:7} {codes:30} {source}" for name, effect, codes, source in rows],
    )
    if settings.disabled_rules:
        typer.echo(f"disabled: {', '.join(settings.disabled_rules)}")
