"""Real infrastructure for tests: the project's own Kafka and PostgreSQL, unless the environment names its own."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass, field

from libs.platform import stack
from libs.platform.kafka import KafkaAccess, KafkaSecurity, wait_for_login
from libs.platform.secure_stack import ADMIN, SecureKafkaBroker
from libs.platform.settings import BatonSettings


@dataclass
class Infra:
    bootstrap_servers: str
    server_dsn: str  # a database URL without the database name's meaning: tests derive fresh ones
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
        base = self.server_dsn.rsplit("/", 1)[0]
        return f"{base}/{name}"

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


def service_env(infra: Infra, topic_prefix: str, database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update(
        {
            "BATON_KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
            "BATON_DATABASE_URL": infra.database_url(database),
            "BATON_TOPIC_PREFIX": topic_prefix,
            "BATON_LOG_JSON": "true",
            "BATON_OPS_PORT": "0",
        }
    )
    return env


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def fresh_environment(infra: Infra, kind: str = "t") -> tuple[BatonSettings, str, str]:
    """Settings for a run of its own: new topic prefix (topics created; on the secured broker its
    ACLs granted, see ``revoke_environment``) and a new database."""
    from libs.contracts.acls import grants
    from libs.platform.acls import apply_acls
    from libs.platform.db import ensure_database
    from libs.platform.kafka import apply_topics

    prefix, database = fresh_name(kind) + ".", fresh_name("db")
    settings = BatonSettings(
        kafka_bootstrap_servers=infra.bootstrap_servers,
        kafka_security=infra.security,
        topic_prefix=prefix,
        database_url=infra.database_url(database),
    )
    await ensure_database(settings.database_url)
    await apply_topics(settings)
    if infra.secured is not None:
        await apply_acls(settings.kafka, grants(prefix))
    return settings, prefix, database


async def revoke_environment(infra: Infra, prefix: str) -> None:
    """Remove a run's grants from the secured broker (its data dir outlives the run)."""
    from libs.contracts.acls import grants
    from libs.platform.acls import revoke_acls

    if infra.secured is not None:
        await revoke_acls(infra.kafka, grants(prefix))
