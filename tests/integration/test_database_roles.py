"""Least privilege on the real server: each service's role works in its own schema and nowhere else,
`baton migrate` is the only thing that changes schemas, and a service waits for it or says why not."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from libs.cli.top import take_snapshot
from libs.contracts.topics import SERVICES
from libs.platform import dsn
from libs.platform.credentials import PassFile
from libs.platform.db import PLATFORM_MIGRATIONS, migration_files
from libs.platform.lag import LagProbe
from libs.platform.roles import prepare_local
from libs.platform.settings import BatonSettings
from tests.support.infra import (
    PROBE,
    Environment,
    Infra,
    drop_roles,
    free_port,
    fresh_environment,
    fresh_name,
)
from tests.support.kafka_io import Publisher
from tests.support.probe_service import PROBE_TOPIC

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def fleet_db(infra: Infra) -> AsyncIterator[Environment]:
    """The five services' schemas and roles, migrated as `baton migrate` does (no processes)."""
    environment = await fresh_environment(infra, "roles")
    yield environment
    await environment.drop()


async def login(environment: Environment, name: str) -> asyncpg.Connection:
    """Connect as that role, the password coming from the run's pgpass file as in the fleet."""
    return await asyncpg.connect(environment.database_urls[name], passfile=str(environment.passfile))


async def test_a_service_role_cannot_read_or_write_another_services_schema(fleet_db: Environment) -> None:
    conn = await login(fleet_db, "intake")
    try:
        for statement in (
            "SELECT count(*) FROM allocation.stock",
            "SELECT count(*) FROM notification.subscriptions",
            "INSERT INTO validation.inbox (message_id) VALUES ('x')",
            "SELECT count(*) FROM allocation.outbox",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for schema"):
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_a_service_role_cannot_change_schemas_create_databases_or_rewrite_its_migrations(
    fleet_db: Environment,
) -> None:
    conn = await login(fleet_db, "allocation")
    try:
        role = await conn.fetchrow(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = current_user"
        )
        assert not any(role.values())
        for statement in (
            "CREATE TABLE allocation.sneaky (id int)",
            "DROP TABLE allocation.stock",
            "ALTER TABLE allocation.stock ADD COLUMN x int",
            "TRUNCATE allocation.stock",
            "CREATE SCHEMA sneaky",
            "CREATE TABLE public.sneaky (id int)",
            "DELETE FROM allocation.schema_migrations",
            "INSERT INTO allocation.schema_migrations (version, checksum) VALUES ('999_x.sql', 'x')",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied to create database"):
            await conn.execute(f'CREATE DATABASE "{fresh_name("nope")}"')
        assert not await conn.fetchval(
            "SELECT has_database_privilege(current_database(), 'CREATE')"
            " OR has_schema_privilege('allocation', 'CREATE')"
        )
    finally:
        await conn.close()


async def test_a_service_role_does_its_normal_work_in_its_own_schema(fleet_db: Environment) -> None:
    conn = await login(fleet_db, "allocation")
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO allocation.inbox (message_id) VALUES ('m-1')")
            outbox_id = await conn.fetchval(  # bigserial: USAGE on its sequence
                "INSERT INTO allocation.outbox (topic, key, value, headers)"
                " VALUES ('t', 'k', 'v', '{}') RETURNING id"
            )
            await conn.execute(
                "INSERT INTO allocation.stock (sku, location_id, on_hand) VALUES ('s', 'l', 3)"
            )
            await conn.execute("SELECT * FROM allocation.stock WHERE sku = 's' FOR UPDATE")
            await conn.execute("UPDATE allocation.stock SET reserved = 1 WHERE sku = 's'")
            await conn.execute("DELETE FROM allocation.outbox WHERE id = $1", outbox_id)
            shipped = migration_files(PLATFORM_MIGRATIONS, "services.allocation.adapters.migrations")
            assert await conn.fetchval("SELECT count(*) FROM allocation.schema_migrations") == len(shipped)
    finally:
        await conn.close()


async def test_a_table_a_later_migration_adds_is_usable_by_the_service_at_once(fleet_db: Environment) -> None:
    """Default privileges: the migrator's new table needs no separate grant for its service."""
    admin = await asyncpg.connect(fleet_db.dsn)
    try:
        await admin.execute("CREATE TABLE fulfillment.added_later (id bigserial PRIMARY KEY, note text)")
    finally:
        await admin.close()
    conn = await login(fleet_db, "fulfillment")
    other = await login(fleet_db, "notification")
    try:
        await conn.execute("INSERT INTO fulfillment.added_later (note) VALUES ('ok')")
        assert await conn.fetchval("SELECT note FROM fulfillment.added_later") == "ok"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await other.fetchval("SELECT note FROM fulfillment.added_later")
    finally:
        await conn.close()
        await other.close()


async def test_the_operator_reads_backlogs_and_subscriptions_but_no_secret_payload_or_write(
    fleet_db: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await asyncpg.connect(fleet_db.dsn)
    try:
        await admin.execute(
            "INSERT INTO notification.subscriptions (subscription_id, url, secret, events)"
            " VALUES ('sub-1', 'http://x', 'whsec_top_secret', '{*}')"
        )
        await admin.execute(
            "INSERT INTO intake.outbox (topic, key, value, headers) VALUES ('t', 'k', 'payload', '{}')"
        )
        await admin.execute(
            "INSERT INTO allocation.timers (kind, key, due_at) VALUES ('payment_deadline', 'o-1', now())"
        )
    finally:
        await admin.close()
    settings = BatonSettings(
        kafka_bootstrap_servers=fleet_db.infra.bootstrap_servers,
        kafka_security=fleet_db.infra.security,
        topic_prefix=fleet_db.prefix,
        database_url=fleet_db.database_urls["operator"],
    )
    monkeypatch.setenv("PGPASSFILE", str(fleet_db.passfile))  # as the operator's shell would have it
    probe = LagProbe(settings.kafka)
    try:
        snapshot = await take_snapshot(settings, probe, {})
    finally:
        await probe.stop()
    assert snapshot.outbox == dict.fromkeys(SERVICES, 0) | {"intake": 1}, "baton top reads every backlog"
    assert set(snapshot.timers) == set(SERVICES), "baton top reads every schema's timers"
    assert snapshot.timers["allocation"][0] == 1

    listed = subprocess.run(
        [sys.executable, "-m", "libs.cli.main", "webhooks", "list"],
        env=fleet_db.service_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "sub-1  active  http://x  events=*  delivered=0 pending=0 dead=0" in listed.stdout
    dead = subprocess.run(
        [sys.executable, "-m", "libs.cli.main", "webhooks", "list", "--dead"],
        env=fleet_db.service_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dead.returncode == 0, dead.stderr

    conn = await login(fleet_db, "operator")
    try:
        for statement in (
            "SELECT secret FROM notification.subscriptions",
            "SELECT secret_sealed FROM notification.subscriptions",
            "SELECT previous_secret_sealed FROM notification.subscriptions",
            "SELECT body FROM notification.deliveries",
            "SELECT value FROM intake.outbox",
            "SELECT * FROM intake.orders",
            "UPDATE notification.subscriptions SET active = false",
            "DELETE FROM intake.outbox",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_role_passwords_reach_the_server_only_as_scram_verifiers(fleet_db: Environment) -> None:
    passwords = PassFile(fleet_db.passfile).read()
    admin = await asyncpg.connect(fleet_db.dsn)
    try:
        stored = dict(
            await admin.fetch(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1)", fleet_db.roles
            )
        )
    finally:
        await admin.close()
    assert set(stored) == set(fleet_db.roles)
    for role, verifier in stored.items():
        assert verifier.startswith("SCRAM-SHA-256$4096:"), "the server kept our verifier as it is"
        assert passwords[role] not in verifier


def run_migrate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "libs.cli.main", "migrate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_baton_migrate_is_idempotent_and_refuses_an_edited_applied_migration(
    infra: Infra, tmp_path: Path
) -> None:
    database = fresh_name("db")
    prefix = f"{database}_"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")} | {
        "DATABASE_URL": infra.database_url(database),
        "BATON_DB_ROLE_PREFIX": prefix,
    }
    passfile = tmp_path / "pgpass"
    try:
        first = run_migrate(env, "--passfile", str(passfile))
        assert first.returncode == 0, first.stderr
        assert "database created" in first.stdout
        assert f"role {prefix}intake: created" in first.stdout
        assert (
            "intake: applied 000_platform_inbox_outbox.sql, 000_platform_outbox_autovacuum.sql,"
            " 000_platform_outbox_headers_json.sql, 000_platform_privacy_erasures.sql,"
            " 000_platform_timers.sql, 001_intake_orders.sql" in first.stdout
        )

        again = run_migrate(env, "--passfile", str(passfile), "--service", "intake")
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[-1] == "intake: up to date"
        assert "database created" not in again.stdout

        admin = await asyncpg.connect(infra.database_url(database))
        try:
            await admin.execute(
                "UPDATE intake.schema_migrations SET checksum = 'edited' WHERE version LIKE '001%'"
            )
        finally:
            await admin.close()
        refused = run_migrate(env, "--passfile", str(passfile), "--service", "intake")
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "baton migrate: migration intake/001_intake_orders.sql changed after it was applied: "
            "migrations are append-only, add a new file instead"
        )
    finally:
        await drop_roles(infra, database, [prefix + n for n in [*SERVICES, "operator"]])


@pytest.mark.parametrize(
    ("attributes", "refusal"),
    [
        ("LOGIN CREATEDB", "has CREATEDB"),
        ("LOGIN IN ROLE postgres", "is the migrator or inherits its rights"),
    ],
)
async def test_baton_migrate_refuses_a_service_role_with_more_power_than_its_schema(
    infra: Infra, tmp_path: Path, attributes: str, refusal: str
) -> None:
    database = fresh_name("db")
    role = f"{database}_intake"
    admin = await asyncpg.connect(infra.server_dsn)
    try:
        await admin.execute(f'CREATE ROLE "{role}" {attributes}')
    finally:
        await admin.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")} | {
        "DATABASE_URL": infra.database_url(database),
        "BATON_DB_URL_INTAKE": dsn.with_login(infra.database_url(database), role, "any-password-1"),
        "BATON_DB_ROLE_PREFIX": f"{database}_",
    }
    try:
        result = run_migrate(env, "--service", "intake", "--passfile", str(tmp_path / "pgpass"))
        assert result.returncode == 1
        assert f"role {role} {refusal}" in result.stderr
        assert "any-password-1" not in result.stdout + result.stderr
    finally:
        await drop_roles(infra, database, [role, f"{database}_operator"])


def start_probe(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.probe_service"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    if process.poll() is None:
        process.terminate()
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


async def _roll_back_probe_schema(environment: Environment) -> None:
    """Make the schema genuinely behind: its only migration undone."""
    admin = await asyncpg.connect(environment.dsn)
    try:
        await admin.execute("DROP TABLE probe.applied")
        await admin.execute("DELETE FROM probe.schema_migrations WHERE version = '001_probe.sql'")
    finally:
        await admin.close()


async def test_a_service_whose_schema_is_behind_exits_with_one_line_naming_the_missing_migration(
    infra: Infra,
) -> None:
    environment = await fresh_environment(infra, schemas=PROBE)
    try:
        await _roll_back_probe_schema(environment)
        process = start_probe(environment.env_for("probe") | {"BATON_SCHEMA_WAIT_S": "0"})
        code = await asyncio.to_thread(process.wait, 90)
        _, err = stop(process)
        assert code == 1, err
        last = json.loads(err.strip().splitlines()[-1])
        assert last["level"] == "CRITICAL"
        assert last["msg"] == (
            "schema probe is behind this release: 001_probe.sql not applied; run `baton migrate --service"
            " probe` as the migrator (gave up after BATON_SCHEMA_WAIT_S=0s)"
        )
        assert "Traceback" not in err
    finally:
        await environment.drop()


async def test_a_service_started_before_the_migrate_step_waits_unready_then_works(infra: Infra) -> None:
    environment = await fresh_environment(infra, schemas=PROBE)
    await _roll_back_probe_schema(environment)
    port = free_port()
    publisher = Publisher(infra.kafka, environment.prefix)
    await publisher.start()
    process = start_probe(environment.env_for("probe") | {"BATON_OPS_PORT": str(port)})
    try:
        await _wait_http(port, "/livez", 200)
        assert await _http(port, "/readyz") == 503
        await asyncio.sleep(1)
        assert process.poll() is None, "it waits instead of exiting"
        # The migrate step, as `baton migrate` runs it (same roles, same pgpass file).
        await prepare_local(
            infra.database_url(environment.database), PROBE, f"{environment.database}_", environment.passfile
        )
        await _wait_http(port, "/readyz", 200, timeout=60)
        await publisher.send(PROBE_TOPIC, "k", {"body": "after-migrate"})
        await _wait_value(
            environment.dsn, "SELECT count(*) FROM probe.applied WHERE body = 'after-migrate'", 1
        )
        sessions = await _fetch(
            environment.dsn,
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE '%probe%'",
            environment.database,
        )
        assert [r["usename"] for r in sessions] == [f"{environment.database}_probe"], (
            "it runs as its own role"
        )
    finally:
        _, err = stop(process)
        await publisher.stop()
        await environment.drop()
    warning = next(json.loads(line) for line in err.splitlines() if "waiting for `baton migrate`" in line)
    assert warning["msg"].startswith("schema probe is behind this release: 001_probe.sql not applied")


async def test_a_start_up_failure_names_the_problem_and_never_the_password(infra: Infra) -> None:
    environment = await fresh_environment(infra, schemas=PROBE)
    secret = "n0t-in-any-log-line"
    missing_role = dsn.with_login(environment.database_urls["probe"], "no_such_role_" + fresh_name(), secret)
    try:
        process = start_probe(
            environment.env_for("probe") | {"BATON_DATABASE_URL": missing_role, "BATON_SCHEMA_WAIT_S": "1"}
        )
        code = await asyncio.to_thread(process.wait, 90)
        out, err = stop(process)
        assert code == 1
        assert secret not in out + err
        last = json.loads(err.strip().splitlines()[-1])
        assert last["msg"].startswith(f"cannot use the database as {dsn.user_name(missing_role)}")
        assert "does not exist" in last["msg"]
    finally:
        await environment.drop()


async def _http(port: int, path: str) -> int | None:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(5)) as response,
        ):
            return response.status
    except aiohttp.ClientError:
        return None


async def _wait_http(port: int, path: str, status: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (last := await _http(port, path)) != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} answered {last}, not {status}, within {timeout}s")
        await asyncio.sleep(0.2)


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _wait_value(url: str, sql: str, expected: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (value := (await _fetch(url, sql))[0][0]) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{sql} gave {value}, not {expected}, within {timeout}s")
        await asyncio.sleep(0.2)
