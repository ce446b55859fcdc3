"""Real infrastructure for tests: the project's own Kafka and PostgreSQL, unless the environment names its own."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from libs.contracts.topics import SERVICES
from libs.platform import dsn, stack
from libs.platform.settings import BatonSettings
from tests.support.fleet import Fleet


@dataclass
class Infra:
    bootstrap_servers: str
    server_dsn: str  # the superuser's URL on the server: tests derive fresh databases from it
    started_kafka: bool
    started_postgres: bool

    def database_url(self, name: str) -> str:
        return dsn.with_database(self.server_dsn, name)


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
    return Infra(bootstrap, dsn, started_kafka, started_pg)


def stop_infra(infra: Infra) -> None:
    if infra.started_kafka:
        stack.KafkaBroker().stop()
    if infra.started_postgres:
        stack.PostgresServer().stop()


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
    """A run of its own: a new topic prefix (topics created), a new database brought to this release
    by the migrate step, and new roles — one per schema and an operator — named after the database
    (roles are cluster-wide: concurrent runs never share one), their passwords in a pgpass file of
    the run. ``drop()`` removes the roles again."""

    infra: Infra
    settings: BatonSettings
    """Topic prefix and the *superuser's* URL of the database: tests look into every schema."""
    prefix: str
    database: str
    database_urls: dict[str, str]
    """Schema (and "operator") -> that role's URL, without password (it is in ``passfile``)."""
    passfile: Path

    @property
    def dsn(self) -> str:
        return self.settings.database_url.get_secret_value()

    @property
    def roles(self) -> list[str]:
        return [dsn.user_name(url) or "" for url in self.database_urls.values()]

    def service_env(self) -> dict[str, str]:
        """Environment of the run's processes. ``BATON_DATABASE_URL`` is the read-only operator's, for
        `baton` operator commands; each service gets its own role's URL (see ``env_for``, ``fleet``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_") and k != "DATABASE_URL"}
        env.update(
            {
                "BATON_KAFKA_BOOTSTRAP_SERVERS": self.infra.bootstrap_servers,
                "BATON_DATABASE_URL": self.database_urls["operator"],
                "PGPASSFILE": str(self.passfile),
                "BATON_TOPIC_PREFIX": self.prefix,
                "BATON_LOG_JSON": "true",
                "BATON_OPS_PORT": "0",
            }
        )
        return env

    def env_for(self, service: str) -> dict[str, str]:
        """One service process's environment: logged in as its own role."""
        return self.service_env() | {"BATON_DATABASE_URL": self.database_urls[service]}

    def fleet(self, log_dir: Path, extra_env: Mapping[str, str] | None = None) -> Fleet:
        return Fleet(self.service_env() | dict(extra_env or {}), log_dir, self.database_urls)

    async def drop(self) -> None:
        await drop_roles(self.infra, self.database, self.roles)
        shutil.rmtree(self.passfile.parent, ignore_errors=True)


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
    """A new topic prefix (topics created) and a new database migrated, as deployed, by the migrate
    step with fresh roles for ``schemas`` (default: the five services'). The caller drops the roles
    with ``await env.drop()``."""
    from libs.cli.main import fleet_migrations
    from libs.platform.kafka import apply_topics
    from libs.platform.roles import prepare_local

    schemas = schemas if schemas is not None else fleet_migrations(SERVICES)
    prefix, database = fresh_name(kind) + ".", fresh_name("db")
    settings = BatonSettings(
        kafka_bootstrap_servers=infra.bootstrap_servers,
        topic_prefix=prefix,
        database_url=infra.database_url(database),
    )
    passfile = Path(tempfile.mkdtemp(prefix="baton-pgpass-")) / "pgpass"
    try:
        urls = await prepare_local(infra.database_url(database), schemas, f"{database}_", passfile)
    except BaseException:
        await drop_roles(infra, database, [f"{database}_{name}" for name in [*schemas, "operator"]])
        raise
    await apply_topics(settings)
    return Environment(infra, settings, prefix, database, urls, passfile)
