"""The plumbing, proven on the real Kafka broker and the real PostgreSQL server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from libs.platform.db import PLATFORM_MIGRATIONS, ensure_database, migrate, migration_files
from tests.support.infra import PROBE, Infra, fresh_environment, fresh_name
from tests.support.kafka_io import Publisher
from tests.support.probe_service import PROBE_TOPIC

pytestmark = pytest.mark.integration


async def test_migrations_apply_in_order_once_and_refuse_an_edited_file(infra: Infra, tmp_path: Path) -> None:
    dsn = infra.database_url(fresh_name("db"))
    await ensure_database(dsn)
    first = await migrate(dsn, "intake", "services.intake.adapters.migrations")
    shipped = [
        name for name, _ in migration_files(PLATFORM_MIGRATIONS, "services.intake.adapters.migrations")
    ]
    assert first == shipped == sorted(shipped)
    assert first[:2] == ["000_platform_inbox_outbox.sql", "000_platform_outbox_autovacuum.sql"]
    assert await migrate(dsn, "intake", "services.intake.adapters.migrations") == []
    conn = await asyncpg.connect(dsn)
    try:
        tables = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'intake'"
            )
        }
        assert {"orders", "status_history", "inbox", "outbox", "schema_migrations"} <= tables
        await conn.execute(
            "UPDATE intake.schema_migrations SET checksum = 'edited' WHERE version LIKE '001%'"
        )
    finally:
        await conn.close()
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        await migrate(dsn, "intake", "services.intake.adapters.migrations")


@pytest.mark.parametrize("crash", ["before_commit", "after_db_commit"])
async def test_a_consumer_killed_before_committing_its_offset_gets_the_message_again_and_applies_it_once(
    infra: Infra, crash: str
) -> None:
    environment = await fresh_environment(infra, schemas=PROBE)
    prefix, dsn, env = environment.prefix, environment.dsn, environment.env_for("probe")
    publisher = Publisher(infra.kafka, prefix)
    await publisher.start()
    try:
        await publisher.send(PROBE_TOPIC, "k", {"body": "payload-1"})
        crashing = subprocess.Popen(
            [sys.executable, "-m", "tests.support.probe_service"], env=env | {"PROBE_CRASH": crash}
        )
        try:
            assert await asyncio.to_thread(crashing.wait, 90) == 17
        finally:
            if crashing.poll() is None:
                crashing.kill()
        rows_after_crash = await _count_rows(dsn)
        assert rows_after_crash == (1 if crash == "after_db_commit" else 0)

        healthy = subprocess.Popen([sys.executable, "-m", "tests.support.probe_service"], env=env)
        try:
            await publisher.send(PROBE_TOPIC, "k", {"body": "payload-2"})
            for _ in range(300):
                if await _count_rows(dsn, "payload-2") == 1:
                    break
                await asyncio.sleep(0.1)
            assert await _count_rows(dsn, "payload-2") == 1
            assert await _count_rows(dsn, "payload-1") == 1, (
                "the crashed message must be applied exactly once"
            )
        finally:
            healthy.terminate()
            healthy.wait(30)
    finally:
        await publisher.stop()
        await environment.drop()


async def _count_rows(dsn: str, body: str | None = None) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        if body is None:
            return int(await conn.fetchval("SELECT count(*) FROM probe.applied"))
        return int(await conn.fetchval("SELECT count(*) FROM probe.applied WHERE body = $1", body))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def test_a_record_with_undecodable_header_bytes_is_applied_and_does_not_block_the_next(
    infra: Infra,
) -> None:
    environment = await fresh_environment(infra, schemas=PROBE)
    prefix, dsn = environment.prefix, environment.dsn
    publisher = Publisher(infra.kafka, prefix)
    await publisher.start()
    service = subprocess.Popen(
        [sys.executable, "-m", "tests.support.probe_service"], env=environment.env_for("probe")
    )
    try:
        await publisher._producer.send_and_wait(
            prefix + PROBE_TOPIC, b'{"body": "odd-header"}', key=b"k", headers=[("trace", b"\xff\xfe")]
        )
        await publisher.send(PROBE_TOPIC, "k", {"body": "after-it"})
        for _ in range(300):
            if await _count_rows(dsn, "after-it") == 1:
                break
            await asyncio.sleep(0.1)
        assert await _count_rows(dsn, "after-it") == 1
        assert await _count_rows(dsn, "odd-header") == 1
    finally:
        service.terminate()
        service.wait(30)
        await publisher.stop()
        await environment.drop()
