"""Durable timers on the real PostgreSQL: each due timer fires once however many workers race for
it, a handler that fails for good becomes a dead letter, one that meets a broken connection leaves
the timer to fire again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from libs.platform.db import create_pool, ensure_database, migrate
from libs.platform.records import Outgoing
from libs.platform.timer_worker import PgTimers, TimerWorker, pending
from libs.platform.timers import Timer
from tests.support.infra import Infra, fresh_name

pytestmark = pytest.mark.integration

SCHEMA = "intake"  # any service schema: every one gets the platform's timers table


@pytest.fixture
async def pool(infra: Infra) -> AsyncIterator[asyncpg.Pool]:
    url = infra.database_url(fresh_name("timers"))
    await ensure_database(url)
    await migrate(url, SCHEMA, "services.intake.adapters.migrations")
    pool = await create_pool(url, SCHEMA, 6)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE fired (kind text, key text, at timestamptz DEFAULT now())")
    try:
        yield pool
    finally:
        await pool.close()


def _route(events: Sequence[Any]) -> list[Outgoing]:
    return [Outgoing(topic="timers.out", key=str(e), value=str(e).encode(), headers={}) for e in events]


def _worker(pool: asyncpg.Pool, handlers: dict[str, Any]) -> TimerWorker:
    return TimerWorker(
        service=SCHEMA,
        pool=lambda: pool,
        handlers=handlers,
        unit=lambda conn: conn,
        route=_route,
        dead_letter_topic="timers.dlq",
        on_commit=lambda: None,
    )


async def _record(timer: Timer, conn: asyncpg.Connection) -> list[str]:
    await conn.execute("INSERT INTO fired (kind, key) VALUES ($1, $2)", timer.kind, timer.key)
    await asyncio.sleep(0)  # let the other worker run between statements
    return [f"{timer.kind}:{timer.key}"]


async def _schedule(pool: asyncpg.Pool, *timers: Timer) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for timer in timers:
            await PgTimers(conn).schedule(timer)


def _due(kind: str, key: str, seconds: float = -1, **payload: Any) -> Timer:
    return Timer(kind, key, datetime.now(UTC) + timedelta(seconds=seconds), payload)


async def test_two_workers_fire_each_due_timer_once_and_leave_the_rest(pool: asyncpg.Pool) -> None:
    await _schedule(pool, *(_due("expire", f"o{i}", order=i) for i in range(60)))
    await _schedule(pool, _due("expire", "later", 3600))
    first, second = _worker(pool, {"expire": _record}), _worker(pool, {"expire": _record})
    counts = await asyncio.gather(first.fire_due(), second.fire_due(), first.fire_due(), second.fire_due())
    assert sum(counts) == 60
    async with pool.acquire() as conn:
        fired = [r["key"] for r in await conn.fetch("SELECT key FROM fired")]
        outbox = [bytes(r["value"]).decode() for r in await conn.fetch("SELECT value FROM outbox")]
        left = await conn.fetch("SELECT key FROM timers")
        count, next_in = await pending(conn)
    assert sorted(fired) == sorted(f"o{i}" for i in range(60)), "each timer fires exactly once"
    assert sorted(outbox) == sorted(f"expire:o{i}" for i in range(60)), "its events go out with it"
    assert [r["key"] for r in left] == ["later"] and count == 1
    assert next_in is not None and 3500 < next_in <= 3600


async def test_scheduling_again_moves_the_deadline_and_cancel_removes_it(pool: asyncpg.Pool) -> None:
    await _schedule(pool, _due("expire", "a", -5, n=1), _due("expire", "b", -5))
    await _schedule(pool, _due("expire", "a", 3600, n=2))
    async with pool.acquire() as conn, conn.transaction():
        await PgTimers(conn).cancel("expire", "b")
        await PgTimers(conn).cancel("expire", "never-scheduled")
    assert await _worker(pool, {"expire": _record}).fire_due() == 0
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT key, payload::text AS payload FROM timers")
    assert row is not None and row["key"] == "a" and orjson.loads(row["payload"]) == {"n": 2}


async def test_a_handler_that_fails_for_good_is_dead_lettered_and_does_not_stop_the_others(
    pool: asyncpg.Pool,
) -> None:
    async def flaky(timer: Timer, conn: asyncpg.Connection) -> list[str]:
        await conn.execute("INSERT INTO fired (kind, key) VALUES ($1, $2)", timer.kind, timer.key)
        if timer.key == "bad":
            raise ValueError("no such order")
        return [timer.key]

    await _schedule(pool, _due("expire", "bad", -10, why="test"), _due("expire", "good", -5))
    assert await _worker(pool, {"expire": flaky}).fire_due() == 2
    async with pool.acquire() as conn:
        fired = [r["key"] for r in await conn.fetch("SELECT key FROM fired")]
        rows = await conn.fetch("SELECT topic, value, headers::text AS headers FROM outbox ORDER BY id")
        left = await conn.fetchval("SELECT count(*) FROM timers")
    assert fired == ["good"], "the failed handler's writes roll back with it"
    assert left == 0
    dead = [r for r in rows if r["topic"] == "timers.dlq"]
    assert len(dead) == 1 and [r["topic"] for r in rows].count("timers.out") == 1
    headers = orjson.loads(dead[0]["headers"])
    assert headers["dlq-cause"] == "timer_failed" and "no such order" in headers["dlq-error"]
    assert orjson.loads(bytes(dead[0]["value"])) == {
        "kind": "expire",
        "key": "bad",
        "payload": {"why": "test"},
    }


async def test_a_timer_whose_firing_broke_off_fires_on_the_next_round(pool: asyncpg.Pool) -> None:
    attempts: list[str] = []

    async def broken_then_fine(timer: Timer, conn: asyncpg.Connection) -> list[str]:
        attempts.append(timer.key)
        await conn.execute("INSERT INTO fired (kind, key) VALUES ($1, $2)", timer.kind, timer.key)
        if len(attempts) == 1:
            raise ConnectionResetError("the database went away mid-transaction")
        return [timer.key]

    await _schedule(pool, _due("expire", "x"))
    worker = _worker(pool, {"expire": broken_then_fine})
    with pytest.raises(ConnectionResetError):
        await worker.fire_due()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM timers") == 1, "the timer is still there"
        assert await conn.fetchval("SELECT count(*) FROM fired") == 0
    assert await worker.fire_due() == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM fired") == 1
        assert await conn.fetchval("SELECT count(*) FROM timers") == 0


async def test_the_worker_fires_a_timer_when_it_falls_due_and_stops_cleanly(pool: asyncpg.Pool) -> None:
    worker = _worker(pool, {"expire": _record})
    worker.start()
    try:
        soon = _due("expire", "soon", 1.5)
        await _schedule(pool, soon)
        async with asyncio.timeout(30):
            while True:
                async with pool.acquire() as conn:
                    if await conn.fetchval("SELECT count(*) FROM fired WHERE key = 'soon'"):
                        break
                await asyncio.sleep(0.1)
        async with pool.acquire() as conn:
            fired_at = await conn.fetchval("SELECT at FROM fired")
            assert await conn.fetchval("SELECT count(*) FROM timers") == 0
    finally:
        await worker.stop()
    assert fired_at >= soon.due_at, "not before it is due"
