"""Least privilege in PostgreSQL: an owner that migrates, one role per service, a read-only operator.

``baton migrate`` runs as the **migrator** (the owner of every Baton schema): it creates the
database if it may, the roles it is given, each service's schema, applies the pending migrations
and then grants. A **service role** gets USAGE on its own schema and DML on its tables and
sequences — nothing on other schemas, no CREATE anywhere, SELECT only on ``schema_migrations``
(to check its version at start-up). Default privileges give it the same on tables that later
migrations add, and every run re-applies the grants, so the rights converge to exactly these.
The **operator** role (``baton webhooks list``, ``baton top``) may read the columns listed in
``OPERATOR_READS`` and nothing else — not the webhook signing secrets, not event payloads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from pydantic import Field, SecretStr

from libs.platform import dsn as urls
from libs.platform.credentials import PassFile, password_sql_literal
from libs.platform.db import ensure_database, migrate, quote_ident
from libs.platform.settings import BatonSettings

OPERATOR = "operator"
DEFAULT_ROLE_PREFIX = "baton_"
PROVISION_LOCK_ID = 0x6261746F6E01  # grants of concurrent `baton migrate` runs never interleave
URL_ENV = "BATON_DB_URL_{}"
"""``BATON_DB_URL_INTAKE``, ..., ``BATON_DB_URL_OPERATOR``: the logins ``baton migrate`` provisions."""

TABLE_RIGHTS = "SELECT, INSERT, UPDATE, DELETE"
SEQUENCE_RIGHTS = "USAGE, SELECT"

OPERATOR_READS: Mapping[str | None, Mapping[str, tuple[str, ...]]] = {
    None: {"outbox": ("id", "created_at"), "timers": ("kind", "key", "due_at")},
    "notification": {
        "subscriptions": ("subscription_id", "url", "events", "active"),
        "api_keys": ("key_id", "name", "channels", "role", "created_at", "revoked_at"),
        "operator_actions": ("action_id", "key_id", "key_name", "action", "order_id", "subject", "at"),
        "deliveries": (
            "delivery_id",
            "subscription_id",
            "event_key",
            "status",
            "attempts",
            "last_error",
            "created_at",
        ),
    },
}
"""Schema (None: every schema) -> table -> the columns the operator commands read: `baton top` counts
each outbox and its pending timers, `baton webhooks list` shows subscriptions (never their signing
secret) and deliveries (never their body), `baton api-keys list` the status API's keys (never their
digest). A command that reads more needs its columns added here."""


class MigrateSettings(BatonSettings):
    """`baton migrate`: ``DATABASE_URL`` is the migrator, the owner of Baton's schemas."""

    db_role_prefix: str = Field(
        default=DEFAULT_ROLE_PREFIX,
        description="Role names <prefix><service> and <prefix>operator, for roles given no BATON_DB_URL_<NAME>",
    )


class AccessRefused(RuntimeError):
    """The database's roles are not what least privilege needs; the message says what to fix."""


@dataclass(frozen=True)
class Login:
    role: str
    password: SecretStr | None = None
    """None: the role is expected to exist (created by a DBA) or logs in without a password
    (certificates, peer); ``baton migrate`` then only grants."""


@dataclass
class MigrationReport:
    database_created: bool = False
    roles: dict[str, str] = field(default_factory=dict)
    """Role -> created, password set, or unchanged."""
    applied: dict[str, list[str]] = field(default_factory=dict)
    """Schema -> migrations applied by this run."""


RISKY_ATTRIBUTES = ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls")


async def ensure_role(conn: asyncpg.Connection, login: Login) -> str:
    """Create the login role if missing and set its password if one is given (as a SCRAM verifier:
    the cleartext never reaches the server). An existing role with more power than a service
    needs (superuser, CREATEDB, CREATEROLE, ...) is refused rather than silently used."""
    role = quote_ident(login.role)
    row = await conn.fetchrow(
        f"SELECT {', '.join(RISKY_ATTRIBUTES)} FROM pg_roles WHERE rolname = $1", login.role
    )
    outcome = "unchanged"
    if row is None:
        try:
            await conn.execute(
                f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            )
            outcome = "created"
        except asyncpg.DuplicateObjectError:
            pass  # created concurrently by another `baton migrate`
    else:
        risky = [a.removeprefix("rol") for a in RISKY_ATTRIBUTES if row[a]]
        if risky:
            raise AccessRefused(
                f"role {login.role} has {', '.join(risky).upper()}: a Baton service or operator role must "
                "have none of these (ALTER ROLE ... NO<attribute>, or give another role)"
            )
        if await conn.fetchval("SELECT pg_has_role($1, current_user, 'USAGE')", login.role):
            raise AccessRefused(
                f"role {login.role} is the migrator or inherits its rights: give each service a role "
                "of its own, not a member of the schemas' owner"
            )
    if login.password is not None:
        await conn.execute(
            f"ALTER ROLE {role} PASSWORD {password_sql_literal(login.password.get_secret_value())}"
        )
        if outcome == "unchanged":
            outcome = "password set"
    return outcome


async def _grant_connect(conn: asyncpg.Connection, role: str) -> None:
    """CONNECT on the database, when the migrator may grant it (else the DBA has, or PUBLIC has)."""
    database = await conn.fetchval("SELECT current_database()")
    try:
        await conn.execute(f"GRANT CONNECT ON DATABASE {quote_ident(database)} TO {quote_ident(role)}")
    except asyncpg.InsufficientPrivilegeError:
        pass


async def grant_service(conn: asyncpg.Connection, schema: str, role: str) -> None:
    """Exactly the rights a service needs on its own schema, re-applied on every run."""
    s, r = quote_ident(schema), quote_ident(role)
    await _grant_connect(conn, role)
    async with conn.transaction():
        await conn.execute(f"REVOKE ALL ON SCHEMA {s} FROM {r}")
        await conn.execute(f"GRANT USAGE ON SCHEMA {s} TO {r}")
        await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}")
        await conn.execute(f"GRANT {TABLE_RIGHTS} ON ALL TABLES IN SCHEMA {s} TO {r}")
        await conn.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {r}")
        await conn.execute(f"GRANT {SEQUENCE_RIGHTS} ON ALL SEQUENCES IN SCHEMA {s} TO {r}")
        # Tables and sequences a later migration creates (as this role) get the same rights at once.
        await conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT {TABLE_RIGHTS} ON TABLES TO {r}")
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT {SEQUENCE_RIGHTS} ON SEQUENCES TO {r}"
        )
        # The service reads its migration version; only the migrator writes it.
        await conn.execute(f"REVOKE INSERT, UPDATE, DELETE ON {s}.schema_migrations FROM {r}")


async def grant_operator(conn: asyncpg.Connection, schema: str, role: str) -> None:
    """Read access to the columns in ``OPERATOR_READS`` that exist in this schema, nothing else."""
    s, r = quote_ident(schema), quote_ident(role)
    reads = {**OPERATOR_READS.get(None, {}), **OPERATOR_READS.get(schema, {})}
    await _grant_connect(conn, role)
    async with conn.transaction():
        await conn.execute(f"REVOKE ALL ON SCHEMA {s} FROM {r}")
        await conn.execute(f"GRANT USAGE ON SCHEMA {s} TO {r}")
        await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}")
        for table, columns in reads.items():
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{s}.{quote_ident(table)}"):
                cols = ", ".join(quote_ident(c) for c in columns)
                await conn.execute(f"GRANT SELECT ({cols}) ON {s}.{quote_ident(table)} TO {r}")


async def migrate_database(
    url: str,
    schemas: Mapping[str, str],
    logins: Mapping[str, Login],
    operator: Login | None = None,
) -> MigrationReport:
    """What ``baton migrate`` does, as the migrator ``url`` logs in: the database (if missing and
    allowed), the roles, then per schema its migrations (``schemas``: schema -> migrations
    package) and its grants. Idempotent; refuses an applied migration that was edited."""
    report = MigrationReport(database_created=await ensure_database(url))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", PROVISION_LOCK_ID)
        for login in [*(logins[s] for s in schemas), *([operator] if operator else [])]:
            report.roles[login.role] = await ensure_role(conn, login)
        for schema, package in schemas.items():
            report.applied[schema] = await migrate(url, schema, package)
            await grant_service(conn, schema, logins[schema].role)
            if operator is not None:
                await grant_operator(conn, schema, operator.role)
    finally:
        await conn.close()
    return report


def logins_from_env(
    env: Mapping[str, str], names: Iterable[str], prefix: str, passfile: Path | None = None
) -> dict[str, Login]:
    """Each name's login: from ``BATON_DB_URL_<NAME>`` (the very URL the service gets, so the role
    and password match its Secret), else role ``<prefix><name>`` with its password from
    ``passfile`` (generated there if missing) or, without a passfile, no password (a DBA's role)."""
    names = list(names)
    from_file = (
        PassFile(passfile).ensure(prefix + n for n in names if not env.get(URL_ENV.format(n.upper())))
        if passfile is not None
        else {}
    )
    logins = {}
    for name in names:
        url = env.get(URL_ENV.format(name.upper()))
        if url:
            role = urls.user_name(url)
            if role is None:
                raise AccessRefused(f"{URL_ENV.format(name.upper())} names no user")
            secret = urls.password(url)
            logins[name] = Login(role, SecretStr(secret) if secret is not None else None)
        else:
            role = prefix + name
            secret = from_file.get(role)
            logins[name] = Login(role, SecretStr(secret) if secret is not None else None)
    return logins


async def prepare_local(url: str, schemas: Mapping[str, str], prefix: str, passfile: Path) -> dict[str, str]:
    """The migrate step of `baton up` and the test fleets: roles ``<prefix><schema>`` and
    ``<prefix>operator`` with generated passwords kept in ``passfile``, migrations, grants.

    Returns each schema's URL (and the operator's): ``url`` logging in as that role, without a
    password — processes find it through ``PGPASSFILE``.
    """
    logins = logins_from_env({}, [*schemas, OPERATOR], prefix, passfile)
    await migrate_database(url, schemas, {s: logins[s] for s in schemas}, logins[OPERATOR])
    return {name: urls.with_login(url, login.role) for name, login in logins.items()}
