"""Real infrastructure for tests: the project's own Kafka and PostgreSQL, unless the environment names its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiokafka.errors import KafkaError

from libs.contracts.topics import SERVICES
from libs.platform import dsn, stack
from libs.platform.kafka import KafkaAccess, KafkaSecurity, wait_for_login
from libs.platform.secret_box import new_key
from libs.platform.secure_stack import ADMIN, SecureKafkaBroker
from libs.platform.settings import BatonSettings
from tests.support.fleet import Fleet


@dataclass
class Infra:
    bootstrap_servers: str
    server_dsn: str  # the superuser's URL on the server: tests derive fresh databases from it
    started_kafka: bool
    started_postgres: bool
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    """How the tests' own clients connect (on the secured broker: as the admin)."""
    secured: SecureKafkaBroker | None = None
    """The secured local broker, when this is the secured infrastructure."""

    @property
    def kafka(self) -> KafkaAccess:
        return KafkaAccess(self.bootstrap_servers, self.security)

    def database_url(self, name: str) -> str:
        return dsn.with_database(self.server_dsn, name)

    def principal_env(self, principal: str) -> dict[str, str]:
        """What a process needs to run as ``principal``: on the secured broker its own login (and,
        least privilege, no topic creation); on the plain one nothing."""
        if self.secured is None:
            return {}
        return self.secured.env(principal) | {"BATON_APPLY_TOPICS": "false"}


def start_infra() -> Infra:
    started_kafka = started_pg = False
    bootstrap = stack.external_kafka()
    if bootstrap is None:
        broker = stack.KafkaBroker()
        started_kafka = not broker.running()
        t0 = time.monotonic()
        broker.start()
        if started_kafka:
            print(f"\n[infra] Kafka {broker.kafka_version} started in {time.monotonic() - t0:.1f}s")
        bootstrap = broker.bootstrap_servers
    dsn = stack.external_database()
    if dsn is None:
        pg = stack.PostgresServer()
        started_pg = not pg.running()
        pg.start()
        dsn = pg.dsn
    # A broker named by the environment is reached with the environment's security settings too.
    security = KafkaSecurity.from_environment() if stack.external_kafka() else KafkaSecurity()
    return Infra(bootstrap, dsn, started_kafka, started_pg, security)


def stop_infra(infra: Infra) -> None:
    if infra.started_kafka:
        (infra.secured or stack.KafkaBroker()).stop()
    if infra.started_postgres:
        stack.PostgresServer().stop()


def start_secure_infra(plain: Infra) -> Infra:
    """The secured local broker (started here unless it runs), beside the plain one, on the same
    PostgreSQL; the tests' own clients log in as the admin."""
    broker = SecureKafkaBroker()
    started = not broker.running()
    t0 = time.monotonic()
    broker.start()
    secured = Infra(
        broker.bootstrap_servers, plain.server_dsn, started, False, broker.security(ADMIN), broker
    )
    asyncio.run(wait_for_login(secured.kafka))
    if started:
        print(f"\n[infra] secured Kafka started in {time.monotonic() - t0:.1f}s")
    return secured


def fresh_name(prefix: str = "t") -> str:
    """Unique per call and per run, so reruns never meet old topics, groups or databases."""
    return f"{prefix}{int(time.time())}{secrets.token_hex(3)}"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PROBE = {"probe": "tests.support.probe_migrations"}


@dataclass
class Environment:
    """A run of its own: a new topic prefix (topics created; on the secured broker its ACLs granted),
    a new database brought to this release by the migrate step, and new roles — one per schema and an
    operator — named after the database (roles are cluster-wide: concurrent runs never share one),
    their passwords in a pgpass file of the run. ``drop()`` removes the roles and the ACLs again.

    As deployed, every service process logs in as itself twice over: its own database role and, on
    the secured broker, its own Kafka principal; ``baton`` commands run as the operator of both."""

    infra: Infra
    settings: BatonSettings
    """Topic prefix, the tests' own Kafka login (the admin on the secured broker) and the
    *superuser's* URL of the database: tests look into every schema."""
    prefix: str
    database: str
    database_urls: dict[str, str]
    """Schema (and "operator") -> that role's URL, without password (it is in ``passfile``)."""
    passfile: Path
    webhook_key: str = field(default_factory=new_key)
    """The run's ``BATON_WEBHOOK_SECRETS_KEY``: notification's, and the operator's for `baton webhooks`."""

    @property
    def dsn(self) -> str:
        return self.settings.database_url.get_secret_value()

    @property
    def roles(self) -> list[str]:
        return [dsn.user_name(url) or "" for url in self.database_urls.values()]

    def service_env(self) -> dict[str, str]:
        """Environment of the run's processes, as the operator: ``BATON_DATABASE_URL`` is the read-only
        operator role's and, on the secured broker, the Kafka login the operator principal's, for
        `baton` operator commands; each service gets its own logins (see ``env_for``, ``fleet``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_") and k != "DATABASE_URL"}
        env.update(
            {
                "BATON_KAFKA_BOOTSTRAP_SERVERS": self.infra.bootstrap_servers,
                "BATON_DATABASE_URL": self.database_urls["operator"],
                "PGPASSFILE": str(self.passfile),
                "BATON_TOPIC_PREFIX": self.prefix,
                "BATON_LOG_JSON": "true",
                "BATON_OPS_PORT": "0",
                "BATON_WEBHOOK_SECRETS_KEY": self.webhook_key,
            }
        )
        return env | self.infra.principal_env("operator")

    def own_logins(self, service: str) -> dict[str, str]:
        """What makes a process ``service``: its database role and (secured broker) Kafka principal."""
        env = {"BATON_DATABASE_URL": self.database_urls[service]}
        if service in SERVICES:
            env |= self.infra.principal_env(service)
        return env

    def env_for(self, service: str) -> dict[str, str]:
        """One service process's environment: logged in as its own role (and principal)."""
        return self.service_env() | self.own_logins(service)

    def fleet(self, log_dir: Path, extra_env: Mapping[str, str] | None = None) -> Fleet:
        """The services as separate processes, each started with its own logins."""
        return Fleet(
            self.service_env() | dict(extra_env or {}),
            log_dir,
            self.database_urls,
            {s: self.own_logins(s) for s in self.database_urls if s in SERVICES}
            # the HTTP gateway keeps no database: only its own Kafka principal
            | {"gateway": self.infra.principal_env("gateway")},
        )

    async def drop(self) -> None:
        """Drop the run's roles and revoke its ACLs, and delete its topics: the brokers outlive the
        runs, and every partition of every topic keeps files open (thousands of runs' topics once
        took the broker past its open-file limit and it shut down)."""
        await drop_roles(self.infra, self.database, self.roles)
        await drop_database(self.infra, self.database)
        shutil.rmtree(self.passfile.parent, ignore_errors=True)
        await delete_topics(self.infra, self.prefix)
        if self.infra.secured is not None:
            from libs.contracts.acls import grants
            from libs.platform.acls import revoke_acls

            await revoke_acls(self.infra.kafka, grants(self.prefix))


async def delete_topics(infra: Infra, prefix: str) -> None:
    """Delete every topic whose name starts with ``prefix`` (a run's own; never an empty prefix)."""
    assert prefix, "only a run's own, prefixed topics are deleted"
    admin = infra.kafka.admin()
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            with contextlib.suppress(KafkaError):
                await admin.delete_topics(mine)
    finally:
        await admin.close()


async def drop_database(infra: Infra, database: str) -> None:
    """Drop the run's database too: the server outlives the runs, and a crash recovery fsyncs every
    file of every database the server holds (a thousand runs' leftovers made it take a minute)."""
    from libs.platform.db import quote_ident

    assert database.startswith("db"), "only a run's own, fresh database is dropped"
    conn = await asyncpg.connect(infra.server_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")
    finally:
        await conn.close()


async def drop_roles(infra: Infra, database: str, roles: list[str]) -> None:
    """Revoke what the roles were granted in ``database`` and drop them (they own nothing)."""
    from libs.platform.db import quote_ident

    try:
        conn = await asyncpg.connect(infra.database_url(database))
    except asyncpg.InvalidCatalogNameError:
        conn = await asyncpg.connect(infra.server_dsn)
    try:
        existing = [
            r["rolname"]
            for r in await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname = ANY($1)", roles)
        ]
        if existing:
            names = ", ".join(quote_ident(r) for r in existing)
            await conn.execute(f"DROP OWNED BY {names}")
            await conn.execute(f"DROP ROLE {names}")
    finally:
        await conn.close()


async def fresh_environment(
    infra: Infra, kind: str = "t", schemas: Mapping[str, str] | None = None
) -> Environment:
    """A new topic prefix (topics created; on the secured broker its ACLs granted) and a new database
    migrated, as deployed, by the migrate step with fresh roles for ``schemas`` (default: the five
    services'). The caller drops the roles and revokes the ACLs with ``await env.drop()``."""
    from libs.cli.main import fleet_migrations
    from libs.contracts.acls import grants
    from libs.platform.acls import apply_acls
    from libs.platform.kafka import apply_topics
    from libs.platform.roles import prepare_local

    schemas = schemas if schemas is not None else fleet_migrations(SERVICES)
    prefix, database = fresh_name(kind) + ".", fresh_name("db")
    settings = BatonSettings(
        kafka_bootstrap_servers=infra.bootstrap_servers,
        kafka_security=infra.security,
        topic_prefix=prefix,
        database_url=infra.database_url(database),
    )
    passfile = Path(tempfile.mkdtemp(prefix="baton-pgpass-")) / "pgpass"
    try:
        urls = await prepare_local(infra.database_url(database), schemas, f"{database}_", passfile)
    except BaseException:
        await drop_roles(infra, database, [f"{database}_{name}" for name in [*schemas, "operator"]])
        await drop_database(infra, database)
        raise
    await apply_topics(settings)
    if infra.secured is not None:
        await apply_acls(settings.kafka, grants(prefix))
    return Environment(infra, settings, prefix, database, urls, passfile)
