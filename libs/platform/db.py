"""PostgreSQL access: one pool per service process and versioned SQL migrations per service schema."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

from libs.platform import dsn as urls

MIGRATION_LOCK_ID = 0x6261746F6E  # "baton": serialises concurrent runs of `baton migrate`


class MigrationRefused(RuntimeError):
    """An applied migration's file was edited afterwards: migrations are append-only."""


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, quoted: any name is safe in DDL, none can break out of it."""
    if not name or "\x00" in name:
        raise ValueError("an identifier must be non-empty and free of NUL")
    return '"' + name.replace('"', '""') + '"'


def session_settings(url: str, schema: str, application_name: str) -> dict[str, str]:
    """Connection settings for a service's schema; an ``application_name`` the URL gives wins."""
    settings = {"search_path": quote_ident(schema)}
    if "application_name" not in urls.parameters(url):
        settings["application_name"] = application_name
    return settings


async def create_pool(dsn: str, schema: str, size: int) -> asyncpg.Pool:
    """A pool whose connections see only the service's own schema by default."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        server_settings=session_settings(dsn, schema, f"baton-{schema}"),
        command_timeout=30,
    )
    assert pool is not None
    return pool


PLATFORM_MIGRATIONS = "libs.platform.migrations"


def migration_files(*packages: str) -> list[tuple[str, str]]:
    """``NNN_name.sql`` files of the platform's and the service's migrations, in version order."""
    files = [f for p in packages for f in resources.files(p).iterdir() if f.name.endswith(".sql")]
    return [(f.name, f.read_text()) for f in sorted(files, key=lambda f: f.name)]


async def migrate(dsn: str, schema: str, package: str) -> list[str]:
    """Apply the service's pending migrations in order, each in its own transaction.

    An applied file that was edited afterwards is refused: migrations are append-only.
    """
    applied_now: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        await conn.execute(f"SET search_path TO {quote_ident(schema)}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")}
        for name, sql in migration_files(PLATFORM_MIGRATIONS, package):
            checksum = checksum_of(sql)
            if name in done:
                if done[name] != checksum:
                    raise MigrationRefused(
                        f"migration {schema}/{name} changed after it was applied: migrations are "
                        "append-only, add a new file instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", name, checksum
                )
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
        await conn.close()
    return applied_now


def checksum_of(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


@dataclass(frozen=True)
class SchemaState:
    """How a service's schema compares with the migrations this release ships."""

    schema: str
    missing: tuple[str, ...]
    """This release's migrations not applied yet: the schema is behind (``baton migrate`` not run)."""
    changed: tuple[str, ...]
    """Applied, but from a file with other contents than this release's: refuse to run on it."""
    newer: tuple[str, ...]
    """Applied migrations this release does not know: a newer release migrated (fine while it rolls
    out, because migrations only ever add)."""

    unreadable: str | None = None
    """Why the role could not read ``schema_migrations`` (no schema yet, no grant yet), if so."""

    @property
    def current(self) -> bool:
        return not self.missing and not self.changed


async def schema_state(conn: asyncpg.Connection, schema: str, package: str) -> SchemaState:
    """Read ``schema_migrations`` of the schema; a schema or table the role cannot see yet counts as
    nothing applied (``baton migrate`` creates both and grants the service role SELECT on it)."""
    expected = {name: checksum_of(sql) for name, sql in migration_files(PLATFORM_MIGRATIONS, package)}
    unreadable = None
    try:
        rows = await conn.fetch(f"SELECT version, checksum FROM {quote_ident(schema)}.schema_migrations")
    except (
        asyncpg.UndefinedTableError,
        asyncpg.InvalidSchemaNameError,
        asyncpg.InsufficientPrivilegeError,
    ) as exc:
        rows, unreadable = [], str(exc)
    applied = {r["version"]: r["checksum"] for r in rows}
    return SchemaState(
        schema=schema,
        missing=tuple(sorted(v for v in expected if v not in applied)),
        changed=tuple(sorted(v for v, c in expected.items() if v in applied and applied[v] != c)),
        newer=tuple(sorted(v for v in applied if v not in expected)),
        unreadable=unreadable,
    )


MAINTENANCE_DATABASES = ("postgres", "template1")


async def ensure_database(dsn: str) -> bool:
    """Create the database named in ``dsn`` if the server does not have it yet; True if created.

    Needs CREATEDB, so only ``baton migrate`` (or a DBA) calls it, never a service. The server is
    reached with the same URL (TLS settings, options, target_session_attrs and all) pointed at a
    maintenance database.
    """
    name = urls.database_name(dsn)
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        if name is None:
            raise
    else:
        await conn.close()
        return False
    admin: asyncpg.Connection | None = None
    for maintenance in MAINTENANCE_DATABASES:
        try:
            admin = await asyncpg.connect(urls.with_database(dsn, maintenance))
            break
        except asyncpg.InvalidCatalogNameError:
            continue
    if admin is None:
        raise RuntimeError(
            f"no maintenance database ({', '.join(MAINTENANCE_DATABASES)}) to create {name!r} from"
        )
    try:
        await admin.execute(f"CREATE DATABASE {quote_ident(name)}")
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        return False  # created concurrently by another `baton migrate`
    finally:
        await admin.close()
    return True
