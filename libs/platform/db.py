"""PostgreSQL access: one pool per service process and versioned SQL migrations per service schema."""

from __future__ import annotations

import hashlib
from importlib import resources

import asyncpg

MIGRATION_LOCK_ID = 0x6261746F6E  # "baton": serialises concurrent start-ups of the same service


async def create_pool(dsn: str, schema: str, size: int) -> asyncpg.Pool:
    """A pool whose connections see only the service's own schema by default."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        server_settings={"search_path": schema, "application_name": f"baton-{schema}"},
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
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")}
        for name, sql in migration_files(PLATFORM_MIGRATIONS, package):
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if name in done:
                if done[name] != checksum:
                    raise RuntimeError(f"migration {schema}/{name} changed after it was applied")
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


async def ensure_database(dsn: str) -> None:
    """Create the database named in ``dsn`` if the server does not have it yet."""
    base, _, name = dsn.rpartition("/")
    name = name.split("?")[0]
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(f"{base}/postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            pass  # another service process created it first
        finally:
            await admin.close()
    else:
        await conn.close()
