"""Passwords really checked: a private PostgreSQL server of this test with scram-sha-256 for every
role but its superuser. The shared server trusts everyone, so only here do the generated passwords,
the pgpass file, passwords in URLs and rotation meet a server that says no."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr

from libs.platform import dsn
from libs.platform.roles import Login, logins_from_env, migrate_database, prepare_local
from libs.platform.stack import PostgresServer
from tests.support.infra import PROBE, Infra, free_port, fresh_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HBA = """\
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


@pytest.fixture(scope="module")
async def scram_server() -> AsyncIterator[str]:
    """The superuser's URL of a private server that checks every other role's password."""
    home = Path(tempfile.mkdtemp(prefix="baton-scram-"))
    server = PostgresServer(port=free_port(), home=home)
    try:
        await asyncio.to_thread(server.start)
        (server.data_dir / "pg_hba.conf").write_text(HBA)
        admin = await asyncpg.connect(server.dsn)
        try:
            assert await admin.fetchval("SELECT pg_reload_conf()")
        finally:
            await admin.close()
        yield server.dsn
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(f"/tmp/baton-pg-{server.port}", ignore_errors=True)


async def can_log_in(url: str, passfile: Path | None = None) -> bool:
    try:
        conn = await asyncpg.connect(url, passfile=str(passfile) if passfile else None, timeout=10)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        return False
    await conn.close()
    return True


async def test_generated_passwords_from_the_pgpass_file_log_in_and_nothing_else_does(
    scram_server: str, tmp_path: Path
) -> None:
    admin = dsn.with_database(scram_server, fresh_name("db"))
    urls = await prepare_local(admin, PROBE, "local_", tmp_path / "pgpass")
    assert await can_log_in(urls["probe"], tmp_path / "pgpass")
    assert await can_log_in(urls["operator"], tmp_path / "pgpass")
    assert not await can_log_in(dsn.with_login(urls["probe"], "local_probe", "a-guess"))
    (tmp_path / "empty").write_text("")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(urls["probe"], passfile=str(tmp_path / "empty"), timeout=10)


@pytest.mark.parametrize("secret", ["p@ss:w/rd?#%&='\"\\", "ünïcödé \ufb01 ligature"])
async def test_a_login_given_as_a_url_works_with_any_password_and_rotates(
    scram_server: str, secret: str
) -> None:
    admin = dsn.with_database(scram_server, fresh_name("db"))
    role = fresh_name("svc")
    url = dsn.with_login(admin, role, secret)
    logins = logins_from_env({"BATON_DB_URL_PROBE": url}, ["probe", "operator"], f"{role}_")
    await migrate_database(admin, PROBE, {"probe": logins["probe"]}, logins["operator"])
    assert await can_log_in(url)

    rotated = dsn.with_login(admin, role, secret + "-rotated")
    await migrate_database(admin, PROBE, {"probe": Login(role, SecretStr(secret + "-rotated"))})
    assert await can_log_in(rotated)
    assert not await can_log_in(url), "the old password stops working once the migrate step ran"


async def test_a_service_process_logs_in_through_its_pgpass_file_and_becomes_ready(
    scram_server: str, infra: Infra, tmp_path: Path
) -> None:
    admin = dsn.with_database(scram_server, fresh_name("db"))
    passfile = tmp_path / "pgpass"
    urls = await prepare_local(admin, PROBE, "proc_", passfile)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "BATON_KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
        "BATON_TOPIC_PREFIX": fresh_name() + ".",
        "BATON_DATABASE_URL": urls["probe"],
        "PGPASSFILE": str(passfile),
        "BATON_OPS_PORT": str(port),
        "BATON_SCHEMA_WAIT_S": "20",
    }
    process = subprocess.Popen([sys.executable, "-m", "tests.support.probe_service"], env=env)
    try:
        deadline = time.monotonic() + 60
        status = None
        while status != 200:
            assert process.poll() is None, "the probe service exited"
            assert time.monotonic() < deadline, f"/readyz answered {status}"
            await asyncio.sleep(0.3)
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(5)) as r,
                ):
                    status = r.status
            except aiohttp.ClientError:
                status = None
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
