"""The ``baton`` command: run a service, the local stack, the whole fleet, and operator tools."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from libs.cli import errors
from libs.cli.api_keys import api_keys as api_keys_app
from libs.cli.config import config_app
from libs.cli.errors import DATABASE_CONNECT_TIMEOUT_S, EXIT_REFUSED, CommandFailed
from libs.contracts.topics import SERVICES
from libs.contracts.topology import EDGES
from libs.platform import stack
from libs.platform.supervisor import Supervisor

if TYPE_CHECKING:
    from libs.platform.secret_box import SecretBox
    from libs.platform.settings import BatonSettings

# Typer's rich tracebacks print every frame's local variables by default: a Kafka password would be
# among them. Tracebacks keep their frames, never their values.
app = typer.Typer(
    no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_show_locals=False
)
stack_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker and PostgreSQL server.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics Baton uses.")
acls_app = typer.Typer(no_args_is_help=True, help="Kafka ACLs: one principal per service and role.")
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(acls_app, name="acls")
dlq_app = typer.Typer(
    no_args_is_help=True, help="Dead letters: records a service could not apply, with the cause."
)
app.add_typer(dlq_app, name="dlq")
webhooks_app = typer.Typer(no_args_is_help=True, help="Webhook subscriptions (changes travel through Kafka).")
app.add_typer(webhooks_app, name="webhooks")
privacy_app = typer.Typer(
    no_args_is_help=True, help="Personal data: erase a customer everywhere, and see where an erasure stands."
)
app.add_typer(privacy_app, name="privacy")
app.add_typer(config_app, name="config")
app.add_typer(api_keys_app, name="api-keys")
rules_app = typer.Typer(
    no_args_is_help=True, help="Validation rules: built-in and plugins (validation adds `list`)."
)
app.add_typer(rules_app, name="rules")


_debug = False


def baton_version() -> str:
    """The installed package's version (``pyproject.toml``), whichever way Baton was installed."""
    try:
        return version("baton")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"baton {baton_version()}")
        raise typer.Exit()


@app.callback()
def options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print Baton's version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="BATON_DEBUG",
            help="On a failure, print the traceback too (otherwise one line says what failed).",
        ),
    ] = False,
) -> None:
    global _debug
    _debug = _debug or debug


def _settings() -> BatonSettings:
    """The settings, or one line per invalid one (never a traceback, never a value: it may be secret)."""
    from pydantic import ValidationError

    from libs.platform.settings import BatonSettings

    try:
        return BatonSettings()
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in error["loc"])
            typer.echo(f"baton: invalid setting{' ' + where if where else ''}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


def _kafka_settings() -> BatonSettings:
    """The settings, once Kafka accepted our login: a broker that cannot be reached, or that
    refuses us, ends the command with one line naming the servers and the setting."""
    settings = _settings()
    asyncio.run(errors.check_kafka(settings.kafka))
    return settings


PROCESSES = (*SERVICES, *(e.name for e in EDGES))
"""What `baton run` and `baton up` start: the five services and the HTTP gateway."""


def service_name(name: str) -> str:
    if name not in PROCESSES:
        raise typer.BadParameter(f"unknown service {name!r}; one of: {', '.join(PROCESSES)}")
    return name


def service_definition(name: str) -> Any:
    """A service's definition, found through the `baton.services` entry points of the installed
    package (libs never import services by name)."""
    found = {e.name: e for e in entry_points(group="baton.services")}
    if service_name(name) not in found:
        raise typer.BadParameter(f"service {name!r} is not installed (no `baton.services` entry point)")
    return found[name].load()


@app.command()
def run(service: Annotated[str, typer.Argument(help=f"one of: {', '.join(PROCESSES)}")]) -> None:
    """Run one service as its own process (what SREs scale). SIGTERM drains and commits, then exits.

    It never migrates: it waits (BATON_SCHEMA_WAIT_S) for `baton migrate` to bring its schema to
    this release, then exits with one line saying what is missing."""
    from libs.platform.kafka import KafkaAccessRefused
    from libs.platform.service import run as run_service

    definition = service_definition(service)
    try:
        status = run_service(definition)
    except KafkaAccessRefused:  # the service logged the one line saying why
        raise typer.Exit(EXIT_REFUSED) from None
    raise typer.Exit(status)


def fleet_migrations(services: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Schema -> migrations package of each service, from its definition (the gateway has none)."""
    found = {name: service_definition(name).migrations for name in services}
    return {name: package for name, package in found.items() if package is not None}


@app.command()
def migrate(
    service: Annotated[str | None, typer.Option(help="only this service's schema (default: all)")] = None,
    passfile: Annotated[
        Path | None,
        typer.Option(
            help="pgpass file (0600) for roles given no BATON_DB_URL_<NAME>: their passwords are read "
            "there, or generated and added (local use)"
        ),
    ] = None,
) -> None:
    """Bring the database to this release, logged in as the migrator (DATABASE_URL).

    Creates the database if missing (when allowed), the service roles and the read-only operator
    role, each schema; applies pending migrations; grants each role exactly its rights. A role's
    name and password come from BATON_DB_URL_<SERVICE> / BATON_DB_URL_OPERATOR (the URLs the
    services get), else the role `<BATON_DB_ROLE_PREFIX><name>` is used as a DBA created it.
    Idempotent; refuses an applied migration that was edited. Run it before the services start.
    """
    import asyncpg

    from libs.platform.db import MigrationRefused
    from libs.platform.roles import (
        OPERATOR,
        AccessRefused,
        MigrateSettings,
        logins_from_env,
        migrate_database,
    )

    settings = MigrateSettings()
    url = settings.database_url.get_secret_value()
    names = [service_name(service)] if service else list(SERVICES)
    try:
        logins = logins_from_env(os.environ, [*names, OPERATOR], settings.db_role_prefix, passfile)
        with errors.database(url):
            report = asyncio.run(
                migrate_database(
                    url, fleet_migrations(names), {n: logins[n] for n in names}, logins[OPERATOR]
                )
            )
    except (MigrationRefused, AccessRefused, asyncpg.PostgresError, OSError) as exc:
        typer.echo(f"baton migrate: {exc}", err=True)
        raise typer.Exit(1) from None
    if report.database_created:
        typer.echo("database created")
    for role, outcome in report.roles.items():
        typer.echo(f"role {role}: {outcome}")
    for schema, applied in report.applied.items():
        typer.echo(f"{schema}: {'applied ' + ', '.join(applied) if applied else 'up to date'}")


@stack_app.command("fetch")
def stack_fetch() -> None:
    """Download Kafka's jars from Maven Central once (skipped with KAFKA_HOME or KAFKA_BOOTSTRAP_SERVERS)."""
    import subprocess

    from libs.cli.progress import MavenDownload

    if stack.external_kafka():
        typer.echo("KAFKA_BOOTSTRAP_SERVERS is set: using that broker, nothing to fetch")
        return
    broker = stack.KafkaBroker()
    if (broker.libs_dir / ".complete").exists() or os.environ.get("KAFKA_HOME"):
        typer.echo(f"Kafka jars: {broker.fetch()}")
        return
    started = time.monotonic()
    with MavenDownload() as download:
        try:
            jars = broker.fetch(on_output=download.line)
        except RuntimeError as missing:  # no Maven
            raise CommandFailed(str(missing)) from missing
        except subprocess.CalledProcessError as failed:
            raise CommandFailed(
                f"Maven could not resolve Kafka's jars (exit {failed.returncode}): {download.first_error()}; "
                "check access to Maven Central (a proxy or mirror goes in ~/.m2/settings.xml), "
                "or set KAFKA_HOME to an unpacked Kafka distribution"
            ) from failed
    typer.echo(f"Kafka jars: {jars} ({download.summary()} in {time.monotonic() - started:.0f} s)")


@stack_app.command("up")
def stack_up(
    kafka_only: bool = False,
    secure: Annotated[
        bool,
        typer.Option(help="the secured broker instead: SASL_SSL + SCRAM, ACLs, one principal per service"),
    ] = False,
) -> None:
    """Start the local broker and database (whichever are not provided by the environment)."""
    started = time.monotonic()
    if not stack.external_kafka():
        if secure:
            _secure_kafka_up()
        else:
            broker = stack.KafkaBroker()
            broker.start()
            typer.echo(
                f"Kafka {broker.kafka_version} ready on {broker.bootstrap_servers} "
                f"({time.monotonic() - started:.1f}s)"
            )
    if not kafka_only and not stack.external_database():
        pg = stack.PostgresServer()
        pg.start()
        typer.echo(f"PostgreSQL ready on {pg.dsn}")


def _secure_kafka_up() -> None:
    """The secured broker, with Baton's topics and ACLs (for ``BATON_TOPIC_PREFIX``) applied as admin."""
    from libs.contracts.acls import grants
    from libs.platform.acls import apply_acls
    from libs.platform.kafka import apply_topics, wait_for_login
    from libs.platform.secure_stack import ADMIN, SecureKafkaBroker
    from libs.platform.settings import BatonSettings

    started = time.monotonic()
    broker = SecureKafkaBroker()
    broker.start()
    admin = BatonSettings(
        kafka_bootstrap_servers=broker.bootstrap_servers, kafka_security=broker.security(ADMIN)
    )

    async def prepare() -> None:
        await wait_for_login(admin.kafka)
        await apply_topics(admin)
        await apply_acls(admin.kafka, grants(admin.topic_prefix))

    asyncio.run(prepare())
    typer.echo(
        f"secured Kafka {broker.kafka_version} ready on {broker.bootstrap_servers} (SASL_SSL, "
        f"{time.monotonic() - started:.1f}s); topics and ACLs applied; CA {broker.ca_file}; "
        f"each principal's settings in {broker.env_dir}/<principal>.env (0600)"
    )


@stack_app.command("down")
def stack_down() -> None:
    """Stop the local brokers (plain and secured) and the database that Baton started."""
    from libs.platform.secure_stack import SecureKafkaBroker

    stack.KafkaBroker().stop()
    SecureKafkaBroker().stop()
    stack.PostgresServer().stop()
    typer.echo("stack stopped")


@stack_app.command("status")
def stack_status() -> None:
    from libs.platform.secure_stack import SecureKafkaBroker

    typer.echo(f"kafka: {'running' if stack.KafkaBroker().running() else 'stopped'}")
    typer.echo(f"kafka (secured): {'running' if SecureKafkaBroker().running() else 'stopped'}")
    typer.echo(f"postgres: {'running' if stack.PostgresServer().running() else 'stopped'}")


@topics_app.command("apply")
def topics_apply() -> None:
    """Create every missing topic and bring existing topics' configs (retention) to the table (idempotent)."""
    from libs.platform.kafka import apply_topics

    changes = asyncio.run(apply_topics(_kafka_settings()))
    for name in changes.created:
        typer.echo(f"created {name}")
    for name, configs in changes.altered.items():
        typer.echo(f"altered {name}: " + ", ".join(f"{k}={v}" for k, v in configs.items()))
    if not changes.created and not changes.altered:
        typer.echo("all topics exist as defined")


@acls_app.command("apply")
def acls_apply(
    prune: Annotated[
        bool, typer.Option(help="also delete these principals' grants on this prefix that the table lacks")
    ] = False,
    user: Annotated[
        list[str],
        typer.Option(
            help="NAME=PRINCIPAL when the cluster knows a principal otherwise, e.g. intake=User:svc-intake"
        ),
    ] = [],  # noqa: B006
) -> None:
    """Grant every principal exactly what libs/contracts/acls.py says (idempotent; run as an admin)."""
    from libs.contracts.acls import grants
    from libs.platform.acls import apply_acls, describe_binding

    settings = _kafka_settings()
    users = dict(item.split("=", 1) for item in user)
    changes = asyncio.run(
        apply_acls(
            settings.kafka,
            grants(settings.topic_prefix),
            users,
            settings.topic_prefix if prune else None,
        )
    )
    typer.echo(f"{len(changes.created)} ACL(s) created, {len(changes.deleted)} deleted")
    for binding in changes.deleted:
        typer.echo(f"  deleted: {describe_binding(binding)}")


@acls_app.command("list")
def acls_list() -> None:
    """The ACL table for BATON_TOPIC_PREFIX (Markdown, as the README shows it, when piped)."""
    from libs.cli import output
    from libs.contracts.acls import render_markdown, table_rows

    prefix = _settings().topic_prefix
    shown = output.table("principal", "may", "on", "names", lines=True)
    for principal, operation, resources, names in table_rows(prefix):
        output.add_row(shown, principal, operation, resources, "\n".join(names))
    output.emit(shown, render_markdown(prefix).splitlines())


@topics_app.command("list")
def topics_list() -> None:
    """Topic names, partition counts and keys, as defined in libs/contracts/topics.py."""
    from libs.cli import output
    from libs.contracts.topics import TOPICS

    shown = output.table("topic", "partitions>", "visibility", "key", "retention (h)>")
    for spec in TOPICS:
        visibility = "public" if spec.public else "internal"
        output.add_row(
            shown, spec.name, str(spec.partitions), visibility, spec.key, str(spec.retention_hours)
        )
    output.emit(
        shown,
        (
            f"{spec.name:34} {spec.partitions:>3}  {'public' if spec.public else 'internal':8}  key={spec.key}"
            for spec in TOPICS
        ),
    )


@app.command()
def up(
    replicas: Annotated[
        list[str], typer.Option("--replicas", "-r", help="service=N, e.g. allocation=2")
    ] = [],  # noqa: B006
    secure: Annotated[
        bool, typer.Option(help="on the secured local broker, each service as its own principal")
    ] = False,
) -> None:
    """Start Kafka, PostgreSQL, all five services and the HTTP gateway; Ctrl-C stops everything."""
    counts = {name: 1 for name in PROCESSES}
    for item in replicas:
        name, _, n = item.partition("=")
        counts[service_name(name)] = int(n)
    with running_fleet(counts, log_dir=None, secure=secure) as fleet:
        typer.echo(f"fleet up: {', '.join(fleet.processes)} — Ctrl-C to stop")
        typer.echo(
            "metrics and health: " + ", ".join(f"{label} :{port}" for label, port in fleet.ops_ports.items())
        )
        host, port = os.environ.get("BATON_HTTP_HOST", "127.0.0.1"), os.environ.get("BATON_HTTP_PORT", "8085")
        typer.echo(
            f"fulfillment board: http://{host}:{port}/board"
            " (log in with a key from `baton api-keys add --all --role operator`)"
        )
        wait_for_stop(fleet)


@contextmanager
def running_fleet(
    counts: dict[str, int],
    log_dir: Path | None,
    secure: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Supervisor]:
    """The stack (unless the environment provides it), the migrate step, then the services, each
    logged in as its own role; all stopped on the way out.

    DATABASE_URL (default: the local server) is the migrator here; the roles' generated passwords
    stay in the pgpass file ``.cache/pgpass`` (0600) that the processes read via PGPASSFILE.

    ``secure``: the secured local broker; each service runs as its own principal and, like in a
    least-privilege cluster, does not create topics (``stack up --secure`` did, as admin).
    ``extra_env``: what every process gets besides (e.g. the demo's ``BATON_PIPELINES_FILE``)."""
    from libs.platform.roles import MigrateSettings, prepare_local
    from libs.platform.secure_stack import SecureKafkaBroker

    own_kafka, own_pg = not stack.external_kafka(), not stack.external_database()
    passfile = stack.cache_dir() / "pgpass"
    env = (
        dict(os.environ)
        | {
            "BATON_LOG_JSON": os.environ.get("BATON_LOG_JSON", "false"),
            "PGPASSFILE": str(passfile),
        }
        | (extra_env or {})
    )
    env.update(local_webhook_env(env))
    if not env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        env.setdefault("BATON_TRACE_DIR", str(stack.cache_dir() / "traces"))
    fleet: Supervisor | None = None
    try:
        stack_up(kafka_only=False, secure=secure and own_kafka)
        settings = MigrateSettings()
        url = settings.database_url.get_secret_value()
        with errors.database(url):
            database_urls = asyncio.run(
                prepare_local(url, fleet_migrations(list(counts)), settings.db_role_prefix, passfile)
            )
        fleet = Supervisor(
            env,
            log_dir,
            ops_port_base=int(os.environ.get("BATON_OPS_PORT_BASE", "9101")),
            database_urls=database_urls,
        )
        for name, count in counts.items():
            extra = (
                SecureKafkaBroker().env(name) | {"BATON_APPLY_TOPICS": "false"}
                if secure and own_kafka
                else {}
            )
            for i in range(count):
                if name == "gateway":  # one host: each gateway process listens on a port of its own
                    port = int(env.get("BATON_GATEWAY_PORT", "8086")) + i
                    extra = extra | {"BATON_GATEWAY_PORT": str(port)}
                fleet.start(name, f"{name}.{i + 1}", extra)
        yield fleet
    finally:
        if fleet is not None:
            fleet.stop()
        if own_kafka:
            stack.KafkaBroker().stop()
            SecureKafkaBroker().stop()
        if own_pg:
            stack.PostgresServer().stop()
        typer.echo("fleet stopped")


def local_webhook_env(env: dict[str, str]) -> dict[str, str]:
    """The local fleet's webhook settings, unless set: the key made once in the cache folder (0600;
    `baton webhooks add` finds it there too) and loopback receivers allowed."""
    from libs.platform.secret_box import KEY_SETTING, local_key

    local: dict[str, str] = {}
    if not env.get(KEY_SETTING):
        local[KEY_SETTING] = local_key(create=True) or ""
    if not env.get("BATON_WEBHOOK_ALLOWED_CIDRS"):
        local["BATON_WEBHOOK_ALLOWED_CIDRS"] = "127.0.0.1/32,::1/128"
    return local


def wait_for_stop(fleet: Supervisor, until: threading.Event | None = None) -> None:
    """Block until Ctrl-C, SIGTERM, ``until`` is set, or a service process dies."""
    stopping = until or threading.Event()

    def request_stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stopping.wait(0.5):
        if dead := fleet.exited():
            typer.echo(f"service processes exited: {dead}; stopping the fleet", err=True)
            return


def _publish(topic: str, key: str, body: dict[str, object]) -> None:
    """Send one command to the fleet over Kafka (idempotent producer, acks=all)."""
    import orjson

    settings = _kafka_settings()

    async def send() -> None:
        producer = settings.kafka.producer(enable_idempotence=True, acks="all")
        try:
            await producer.start()
            await producer.send_and_wait(settings.topic(topic), orjson.dumps(body), key=key.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def _secret_box() -> SecretBox:
    """The key notification seals secrets with: BATON_WEBHOOK_SECRETS_KEY, or the local fleet's."""
    from pydantic import ValidationError

    from libs.platform.secret_box import KEY_SETTING, WebhookOperatorSettings

    try:
        box = WebhookOperatorSettings().secret_box()
    except (ValidationError, ValueError):
        typer.echo(f"baton: {KEY_SETTING} must be one or more comma-separated Fernet keys", err=True)
        raise typer.Exit(2) from None
    if box is None:
        typer.echo(
            f"baton: {KEY_SETTING} is not set: secrets are sent sealed with the key notification has",
            err=True,
        )
        raise typer.Exit(2)
    return box


def _signing_secret(secret_file: Path | None) -> tuple[str, bool]:
    """A new secret (shown once), or the operator's own read from a file or stdin (`-`): a secret
    never goes on a command line. Returns it and whether it was generated here."""
    from libs.platform.secret_box import new_webhook_secret

    if secret_file is None:
        return new_webhook_secret(), True
    try:
        text = sys.stdin.read() if str(secret_file) == "-" else secret_file.read_text()
    except (OSError, UnicodeDecodeError) as unreadable:
        why = errors.reason(unreadable) if isinstance(unreadable, OSError) else "not text"
        raise CommandFailed(f"cannot read the secret file {secret_file}: {why}", errors.EXIT_USAGE) from None
    secret = text.strip()
    if not secret or "\n" in secret:
        raise typer.BadParameter("the secret file must hold one line, `whsec_<base64>`")
    return secret, False


SECRET_FILE_HELP = (
    "bring your own secret (`whsec_` + base64 of 24-64 bytes) from this file, or `-` for stdin; "
    "by default a new one is generated and printed once"
)


def _show_secret(secret: str) -> None:
    typer.echo(secret)
    typer.echo(
        "The signing secret above is shown once: give it to the receiver. Baton keeps it encrypted.",
        err=True,
    )


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Option(help="where deliveries are POSTed (https on a public host)")],
    events: Annotated[
        str, typer.Option(help="comma-separated, e.g. order.shipped,stage.entered:packed or *")
    ],
    subscription_id: Annotated[str | None, typer.Option(help="defaults to a new id")] = None,
    secret_file: Annotated[Path | None, typer.Option(help=SECRET_FILE_HELP)] = None,
) -> None:
    """Subscribe an endpoint to order statuses and stage events; prints the subscription id, then
    the new signing secret (once).

    The secret travels sealed with BATON_WEBHOOK_SECRETS_KEY. Notification checks the URL with its
    egress guard (`baton webhooks check-url`) and the secret; a refused subscription is
    dead-lettered with the cause (`baton dlq list --service notification`)."""
    import uuid

    from libs.contracts.notification import WebhookSubscriptionChanged
    from libs.contracts.topics import NOTIFICATION_SUBSCRIPTIONS

    box = _secret_box()
    secret, generated = _signing_secret(secret_file)
    sid = subscription_id or f"sub_{uuid.uuid4().hex[:12]}"
    command = WebhookSubscriptionChanged(
        action="add",
        subscription_id=sid,
        url=url,
        secret_ciphertext=box.seal(secret),
        events=[e.strip() for e in events.split(",") if e.strip()],
    )
    _publish(NOTIFICATION_SUBSCRIPTIONS, sid, command.model_dump(mode="json", exclude_none=True))
    typer.echo(sid)
    if generated:
        _show_secret(secret)


@webhooks_app.command("rotate-secret")
def webhooks_rotate_secret(
    subscription_id: str,
    grace_hours: Annotated[
        float,
        typer.Option(
            min=0,
            max=720,
            help="hours the old secret stays valid; deliveries carry both signatures meanwhile",
        ),
    ] = 24.0,
    secret_file: Annotated[Path | None, typer.Option(help=SECRET_FILE_HELP)] = None,
) -> None:
    """Give a subscription a new signing secret (printed once). For --grace-hours deliveries are
    signed with the old and the new secret (`webhook-signature: v1,<new> v1,<old>`), then the new one only."""
    from libs.contracts.notification import WebhookSubscriptionChanged
    from libs.contracts.topics import NOTIFICATION_SUBSCRIPTIONS

    box = _secret_box()
    secret, generated = _signing_secret(secret_file)
    command = WebhookSubscriptionChanged(
        action="rotate_secret",
        subscription_id=subscription_id,
        secret_ciphertext=box.seal(secret),
        grace_hours=grace_hours,
    )
    _publish(NOTIFICATION_SUBSCRIPTIONS, subscription_id, command.model_dump(mode="json", exclude_none=True))
    if generated:
        _show_secret(secret)
    else:
        typer.echo(f"rotation of {subscription_id} sent")


@webhooks_app.command("new-key")
def webhooks_new_key() -> None:
    """Print a new key for BATON_WEBHOOK_SECRETS_KEY (put it in a secret store, never in a file in git)."""
    from libs.platform.secret_box import new_key

    typer.echo(new_key())


@webhooks_app.command("remove")
def webhooks_remove(subscription_id: str) -> None:
    """Stop deliveries to a subscription (its history stays)."""
    from libs.contracts.topics import NOTIFICATION_SUBSCRIPTIONS

    _publish(
        NOTIFICATION_SUBSCRIPTIONS, subscription_id, {"action": "remove", "subscription_id": subscription_id}
    )
    typer.echo(f"removal of {subscription_id} sent")


@webhooks_app.command("list")
def webhooks_list(
    dead: Annotated[bool, typer.Option(help="list dead-lettered deliveries instead")] = False,
) -> None:
    """Subscriptions with delivery counts (read from notification's own store; the read-only operator
    role suffices: the columns read are those in libs/platform/roles.py OPERATOR_READS)."""
    import asyncpg

    from libs.cli import output

    url = _settings().database_url.get_secret_value()

    async def read() -> list[Any]:
        conn = await asyncpg.connect(url, timeout=DATABASE_CONNECT_TIMEOUT_S)
        try:
            if dead:
                return list(
                    await conn.fetch(
                        "SELECT delivery_id, subscription_id, event_key, attempts, last_error"
                        " FROM notification.deliveries WHERE status = 'dead' ORDER BY created_at"
                    )
                )
            return list(
                await conn.fetch(
                    "SELECT s.subscription_id, s.url, s.events, s.active,"
                    " count(d.delivery_id) FILTER (WHERE d.status = 'delivered') AS delivered,"
                    " count(d.delivery_id) FILTER (WHERE d.status = 'pending') AS pending,"
                    " count(d.delivery_id) FILTER (WHERE d.status = 'dead') AS dead"
                    " FROM notification.subscriptions s"
                    " LEFT JOIN notification.deliveries d USING (subscription_id)"
                    " GROUP BY s.subscription_id ORDER BY s.subscription_id"
                )
            )
        finally:
            await conn.close()

    with errors.database(url):
        rows = asyncio.run(read())
    if dead:
        shown = output.table("delivery", "subscription", "event", "attempts>", "last error")
        for r in rows:
            output.add_row(
                shown, r["delivery_id"], r["subscription_id"], r["event_key"], r["attempts"], r["last_error"]
            )
        output.emit(
            shown,
            (
                f"{r['delivery_id']}  {r['subscription_id']}  {r['event_key']}  "
                f"attempts={r['attempts']}  {r['last_error']}"
                for r in rows
            ),
        )
        return
    shown = output.table("subscription", "state", "url", "events", "delivered>", "pending>", "dead>")
    for r in rows:
        state = "active" if r["active"] else "removed"
        output.add_row(
            shown,
            r["subscription_id"],
            state,
            r["url"],
            ", ".join(r["events"]),
            r["delivered"],
            r["pending"],
            r["dead"],
        )
    output.emit(
        shown,
        (
            f"{r['subscription_id']}  {'active' if r['active'] else 'removed'}  {r['url']}  "
            f"events={','.join(r['events'])}  delivered={r['delivered']} pending={r['pending']} dead={r['dead']}"
            for r in rows
        ),
    )


@webhooks_app.command("redeliver")
def webhooks_redeliver(
    delivery_id: Annotated[str | None, typer.Argument(help="one dead delivery")] = None,
    subscription: Annotated[str | None, typer.Option(help="every dead delivery of this subscription")] = None,
) -> None:
    """Send dead-lettered deliveries again, with a fresh attempt budget."""
    from libs.contracts.topics import NOTIFICATION_REDELIVERIES

    if not delivery_id and not subscription:
        raise typer.BadParameter("give a delivery id or --subscription")
    _publish(
        NOTIFICATION_REDELIVERIES,
        delivery_id or subscription or "",
        {"delivery_id": delivery_id, "subscription_id": subscription},
    )
    typer.echo("redelivery requested")


@privacy_app.command("erase")
def privacy_erase(
    customer: Annotated[
        str,
        typer.Option(
            help="the channel's customer id, as orders carry it (customer.id); - reads it from stdin"
        ),
    ],
    channel: Annotated[
        str | None,
        typer.Option(help="only this channel's customer (default: this customer id on every channel)"),
    ] = None,
    request_id: Annotated[str | None, typer.Option(help="idempotency key (default: a new one)")] = None,
) -> None:
    """Erase a customer's personal data from every service that keeps it (through Kafka).

    Every order the customer placed before now loses name, e-mail, address and customer id wherever
    it is kept, also one still on its way; orders placed later are kept. Prints the request id for
    `baton privacy status`. Sending the same request id again changes nothing."""
    import sys
    import uuid

    from pydantic import ValidationError

    from libs.cli.privacy import request_erasure
    from libs.contracts.envelope import utcnow
    from libs.contracts.privacy import ErasureRequested

    customer_id = sys.stdin.readline().strip() if customer == "-" else customer
    try:
        request = ErasureRequested(
            request_id=request_id or f"erasure_{uuid.uuid4().hex[:12]}",
            customer_id=customer_id,
            channel=channel,
            requested_at=utcnow(),
        )
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        raise typer.BadParameter(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    asyncio.run(request_erasure(_kafka_settings(), request))
    typer.echo(request.request_id)


@privacy_app.command("status")
def privacy_status(
    request_id: str,
    wait: Annotated[float, typer.Option(help="wait up to this many seconds for every service")] = 0.0,
) -> None:
    """Which services applied an erasure request and what each changed (exit status 1 while one has not)."""
    from libs.cli.privacy import erasure_status

    settings = _kafka_settings()
    deadline = time.monotonic() + wait
    while True:
        status = asyncio.run(erasure_status(settings, request_id))
        if status.complete or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    for report in status.reports:
        typer.echo(
            f"{report.service:12} applied  orders={report.orders} rows={report.rows_changed}"
            f"  at {report.occurred_at:%Y-%m-%d %H:%M:%S}"
        )
    for service in status.waiting_for:
        typer.echo(f"{service:12} pending")
    if not status.complete:
        raise typer.Exit(1)


@app.command()
def trace(
    order_id: Annotated[uuid.UUID, typer.Argument(help="the order's id (a UUID), as on orders.status.v1")],
    trace_dir: Annotated[Path | None, typer.Option(help="default: $BATON_TRACE_DIR or .cache/traces")] = None,
    queries: Annotated[bool, typer.Option(help="show the database calls too")] = False,
) -> None:
    """Print one order's span tree across all services (from the local trace files)."""
    from libs.cli.traces import load_order_spans, render

    folder = trace_dir or Path(os.environ.get("BATON_TRACE_DIR") or stack.cache_dir() / "traces")
    spans = load_order_spans(folder, str(order_id))
    typer.echo(render(str(order_id), spans, queries))
    if not spans:
        raise typer.Exit(1)


@app.command()
def top(
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 2.0,
    iterations: Annotated[
        int | None, typer.Option(help="stop after N screens (default: until Ctrl-C)")
    ] = None,
) -> None:
    """Live view: consumer lag, members and rate per consumer group; dead letters; outbox backlog."""
    from libs.cli.top import watch

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch(_kafka_settings(), interval, iterations))


@dlq_app.command("list")
def dlq_list(
    service: Annotated[str | None, typer.Option(help="only this service")] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show the error and the whole body")
    ] = False,
) -> None:
    """Every dead letter: when, which service, the cause, where the record came from, and its body.

    Bodies and errors are shown with personal data masked (libs/contracts/privacy.py): a dead
    letter is kept 7 days and replayed as it came, so seeing a customer's name or address never
    changes what can be done with it."""
    from libs.cli import output
    from libs.cli.dlq import read_dead_letters
    from libs.contracts.privacy import redact_body, redact_text

    services = (service_name(service),) if service else SERVICES
    letters = asyncio.run(read_dead_letters(_kafka_settings(), services))
    total = f"{len(letters)} dead letter(s)"
    shown = output.table(
        "dead-lettered (UTC)",
        "service",
        "cause",
        "source topic[partition]@offset",
        "body (personal data masked)",
        *(["error"] if verbose else []),
        lines=True,
    )
    for d in letters:
        body = redact_body(d.value)
        cells = [body if verbose else body[:300]]
        if verbose:
            cells.append(redact_text(d.headers.get("dlq-error", ""), d.value)[:500])
        output.add_row(shown, f"{d.at:%Y-%m-%d %H:%M:%S}", d.service, d.cause, d.source, *cells)

    def plain() -> Iterator[str]:
        for d in letters:
            yield f"{d.at:%Y-%m-%d %H:%M:%S}  {d.service:12} {d.cause:26} {d.source}"
            body = redact_body(d.value)
            yield f"    {body if verbose else body[:300]}"
            if verbose:
                yield f"    {redact_text(d.headers.get('dlq-error', ''), d.value)[:500]}"

    output.emit(shown, plain())
    typer.echo(total)


@dlq_app.command("replay")
def dlq_replay(
    service: Annotated[str, typer.Option(help="whose dead letters to replay")],
    since: Annotated[datetime | None, typer.Option(help="only those dead-lettered at or after (UTC)")] = None,
    cause: Annotated[str | None, typer.Option(help="only this cause, e.g. processing_failed")] = None,
) -> None:
    """Send dead letters back to their source topics, to be applied again (e.g. after a fix)."""
    from libs.cli.dlq import replay

    when = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    count = asyncio.run(replay(_kafka_settings(), service_name(service), when, cause))
    typer.echo(f"replayed {count} record(s)")


@app.command()
def contracts(
    output: Annotated[
        Path | None,
        typer.Option(
            help="where to write the AsyncAPI document "
            "(default: docs/asyncapi.yaml in a source checkout, else ./asyncapi.yaml)"
        ),
    ] = None,
) -> None:
    """Write the AsyncAPI 3 document of Baton's topics and event contracts."""
    from libs.contracts.asyncapi import render_asyncapi

    if output is None:
        checkout = stack.source_checkout()
        output = checkout / "docs/asyncapi.yaml" if checkout else Path("asyncapi.yaml")
    output.write_text(render_asyncapi())
    typer.echo(f"wrote {output}")


@app.command()
def demo(
    rate: Annotated[float, typer.Option(help="orders per second the channel submits")] = 20.0,
    duration: Annotated[float, typer.Option(help="seconds of submitting")] = 60.0,
    attach: Annotated[
        bool,
        typer.Option(
            help="use a fleet that is already running (make run); its pipelines are left as they are, "
            "so shipments are late only where they declare `sla_hours`"
        ),
    ] = False,
) -> None:
    """Seed a catalog, three locations and stock; play a channel; show orders by status as they flow.

    Some orders are click-and-collect, some delivered orders are returned (the demo plays the
    customer and the warehouse), and the fleet the demo starts has a standard pipeline whose
    `picking` stage is late after seconds, so some shipments are late."""
    from libs.cli.demo import demo_pipelines_file, run_demo

    run_id = f"demo-{int(time.time())}"
    if attach:
        asyncio.run(run_demo(_kafka_settings(), rate, duration, run_id))
        return
    log_dir = stack.cache_dir() / "demo-logs"
    pipelines = demo_pipelines_file(stack.cache_dir())
    with running_fleet(
        {name: 1 for name in SERVICES}, log_dir=log_dir, extra_env={"BATON_PIPELINES_FILE": str(pipelines)}
    ) as fleet:
        typer.echo(f"fleet started; service logs in {log_dir}; pipelines from {pipelines}")
        asyncio.run(run_demo(_settings(), rate, duration, run_id, healthy=lambda: not fleet.exited()))


def _add_service_commands() -> None:
    """Commands a service adds to `baton` (e.g. fulfillment's `pipelines`, notification's `api-keys`
    group and `webhooks check-url`: `<group>.<name>`), from the `baton.commands` entry points: the
    CLI offers them without importing services by name."""
    groups = {
        "webhooks": webhooks_app,
        "dlq": dlq_app,
        "topics": topics_app,
        "stack": stack_app,
        "rules": rules_app,
    }
    for command in entry_points(group="baton.commands"):
        group, _, name = command.name.rpartition(".")
        with contextlib.suppress(ImportError):  # a service that is not installed adds nothing
            loaded = command.load()
            target = groups.get(group, app)
            if isinstance(loaded, typer.Typer):
                target.add_typer(loaded, name=name)
            else:
                target.command(name=name)(loaded)


_add_service_commands()


def main(args: Sequence[str] | None = None) -> None:
    """``baton``: whatever fails ends with one line and an exit status, never a traceback (unless
    ``--debug`` or ``BATON_DEBUG=1``): 1 when Kafka or PostgreSQL cannot be reached or refuses a
    request, 2 for a wrong command line, 78 when Kafka refuses our login or certificate."""
    sys.exit(run_cli(args))


def run_cli(args: Sequence[str] | None = None) -> int:
    """``main`` without leaving the process: the exit status."""
    global _debug
    _debug = False
    argv = list(sys.argv[1:] if args is None else args)
    try:
        status = app(args=argv, prog_name="baton", standalone_mode=False)
    except typer.TyperException as refused:  # the command line (typer's own click: usage, parameters)
        if type(refused).__name__ != "NoArgsIsHelpError":  # that one printed the help already
            ctx = getattr(refused, "ctx", None)
            command = ctx.command_path if ctx is not None else "baton"
            hint = f" (see `{command} --help`)" if refused.exit_code == errors.EXIT_USAGE else ""
            typer.echo(f"{command}: {refused.format_message()}{hint}", err=True)
        return refused.exit_code
    except typer.Abort:
        typer.echo("baton: aborted", err=True)
        return 1
    except Exception as exc:
        failed = _explain(exc)
        if _debug or _debug_requested(argv):
            traceback.print_exception(exc)
        typer.echo(f"baton: {failed.line}", err=True)
        return failed.status
    return status if isinstance(status, int) else 0


def _explain(exc: Exception) -> CommandFailed:
    """The one line for a failure a command did not put in words itself."""
    from libs.platform.kafka import KafkaAccessRefused

    if isinstance(exc, CommandFailed):
        return exc
    if isinstance(exc, KafkaAccessRefused):
        return CommandFailed(str(exc), EXIT_REFUSED)
    with contextlib.suppress(Exception):  # the settings were readable when the command started
        if (failed := errors.kafka_failure(exc, _settings().kafka)) is not None:
            return failed
    return CommandFailed(
        f"unexpected {type(exc).__name__}: {exc} (run again with --debug or BATON_DEBUG=1 for the traceback)"
    )


def _debug_requested(argv: list[str]) -> bool:
    """Also when the failure came before the options were parsed."""
    flag = os.environ.get("BATON_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or "--debug" in argv[: argv.index("--") if "--" in argv else len(argv)]


if __name__ == "__main__":
    main()
