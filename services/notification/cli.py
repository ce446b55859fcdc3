"""Notification's own `baton` command: `baton webhooks check-url URL` (the keys of the status API
are `baton api-keys`, in libs/cli/api_keys.py: the HTTP gateway uses the same keys)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from pydantic import ValidationError

from services.notification.adapters.egress import SystemResolver
from services.notification.app.egress import Allowed, EgressGuard
from services.notification.settings import NotificationSettings


def _settings() -> NotificationSettings:
    try:
        return NotificationSettings()
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in error["loc"])
            typer.echo(f"baton: invalid setting{' ' + where if where else ''}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


def check_url(url: Annotated[str, typer.Argument(help="the webhook URL to check")]) -> None:
    """Whether notification would send a webhook to URL: `allowed`, or `refused: <reason>` (exit 1).

    The dispatcher's own guard with its settings (BATON_WEBHOOK_ALLOW_HTTP,
    BATON_WEBHOOK_ALLOWED_CIDRS). The host is resolved here: run it where notification runs to see
    the cluster's DNS, and note that notification checks again at every send."""
    settings = _settings()
    guard = EgressGuard(settings.egress_policy(), SystemResolver(settings.webhook_timeout_s))
    verdict = asyncio.run(guard.check(url))
    if isinstance(verdict, Allowed):
        typer.echo("allowed")
        return
    typer.echo(f"refused: {verdict}")
    raise typer.Exit(1)
