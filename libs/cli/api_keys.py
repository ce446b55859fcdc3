"""`baton api-keys add|list|revoke`: the channel keys of the status API and the HTTP intake gateway.

Changes travel as commands on `notification.api-keys.v1` (services talk only through Kafka), written
as the operator principal; the topic is compacted by key id, so it is the key store itself:
notification keeps the keys it applies in its table, and every gateway process follows the topic from
its beginning. A new key is printed once and never sent anywhere: the command carries its SHA-256
digest only. `list` reads notification's store as the read-only operator role.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated

import typer
from pydantic import ValidationError

from libs.api_keys import ALL_CHANNELS, VIEWER, digest, new_key
from libs.cli import errors, output
from libs.contracts.notification import ApiKeyChanged
from libs.contracts.topics import NOTIFICATION_API_KEYS
from libs.platform.settings import BatonSettings

api_keys = typer.Typer(
    no_args_is_help=True,
    help="Channel keys of the status API and the HTTP gateway (changes travel through Kafka).",
)


def _settings(kind: type[BatonSettings] = BatonSettings) -> BatonSettings:
    try:
        return kind()
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in error["loc"])
            typer.echo(f"baton: invalid setting{' ' + where if where else ''}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


def _send(command: ApiKeyChanged) -> None:
    """One command to notification (idempotent producer, acks=all), once Kafka accepted our login
    (a broker away or refusing ends the command in one line)."""
    settings = _settings()

    async def send() -> None:
        await errors.check_kafka(settings.kafka)
        producer = settings.kafka.producer(enable_idempotence=True, acks="all")
        try:
            await producer.start()
            await producer.send_and_wait(
                settings.topic(NOTIFICATION_API_KEYS),
                command.model_dump_json().encode(),
                key=command.key_id.encode(),
            )
        finally:
            await producer.stop()

    asyncio.run(send())


def _command(**fields: object) -> ApiKeyChanged:
    try:
        return ApiKeyChanged.model_validate(fields)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            typer.echo(f"baton: {error['msg']}", err=True)
        raise typer.Exit(2) from None


@api_keys.command("add")
def add(
    channel: Annotated[
        list[str] | None,
        typer.Option("--channel", help="a channel whose orders the key reads and submits (repeatable)"),
    ] = None,
    all_channels: Annotated[
        bool, typer.Option("--all", help="read every channel's orders (support tools; submits for none)")
    ] = False,
    name: Annotated[str, typer.Option(help="who or what uses the key")] = "",
    role: Annotated[
        str, typer.Option(help="viewer (reads, the default) or operator (also acts on the fulfillment board)")
    ] = VIEWER,
) -> None:
    """Create a key and print it once; only its SHA-256 digest is sent and stored."""
    if all_channels == bool(channel):
        raise typer.BadParameter("give one or more --channel, or --all")
    key = new_key()
    command = _command(
        action="add",
        key_id=f"key_{secrets.token_hex(6)}",
        name=name,
        key_hash=digest(key),
        channels=[ALL_CHANNELS] if all_channels else channel,
        role=role,
    )
    _send(command)
    typer.echo(f"key_id: {command.key_id}")
    typer.echo(f"key: {key}")
    typer.echo("Store the key now: it is shown only this once (Authorization: Bearer <key>).", err=True)


@api_keys.command("revoke")
def revoke(key_id: str) -> None:
    """Revoke a key for good (refused as soon as notification, and each gateway process, read the command)."""
    _send(_command(action="revoke", key_id=key_id))
    typer.echo(f"revocation of {key_id} sent")


@api_keys.command("list")
def list_keys() -> None:
    """The keys with their channels and state, never a key or its digest (the read-only operator role
    suffices: libs/platform/roles.py OPERATOR_READS)."""
    import asyncpg

    url = _settings().database_url.get_secret_value()

    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url, timeout=errors.DATABASE_CONNECT_TIMEOUT_S)
        try:
            return list(
                await conn.fetch(
                    "SELECT key_id, name, channels, role, created_at, revoked_at FROM notification.api_keys"
                    " ORDER BY created_at, key_id"
                )
            )
        finally:
            await conn.close()

    with errors.database(url):
        rows = asyncio.run(read())
    states = [f"revoked {r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "active" for r in rows]
    shown = output.table("key", "state", "role", "channels", "created (UTC)", "name")
    for r, state in zip(rows, states, strict=True):
        output.add_row(
            shown,
            r["key_id"],
            state,
            r["role"],
            ", ".join(r["channels"]),
            f"{r['created_at']:%Y-%m-%d %H:%M}",
            r["name"],
        )
    output.emit(
        shown,
        (
            f"{r['key_id']}  {state}  {r['role']}  channels={','.join(r['channels'])}  "
            f"created={r['created_at']:%Y-%m-%d %H:%M}  {r['name']}"
            for r, state in zip(rows, states, strict=True)
        ),
    )
