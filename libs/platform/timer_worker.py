"""The durable timers' PostgreSQL side: ``PgTimers`` (the ``Timers`` port on the service's own
``timers`` table) and the ``TimerWorker`` every process runs to fire due timers, each once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from libs.contracts.envelope import Event
from libs.platform import metrics
from libs.platform.messaging import TRANSIENT_ERRORS, Outgoing, write_outbox
from libs.platform.records import dead_letter_of
from libs.platform.timers import Timer, TimerHandler

log = logging.getLogger("baton.timers")

POLL_S = 1.0
BATCH = 100


class PgTimers:
    """``Timers`` on the service's own ``timers`` table, inside the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def schedule(self, timer: Timer) -> None:
        await self._conn.execute(
            "INSERT INTO timers (kind, key, due_at, payload) VALUES ($1, $2, $3, $4::json)"
            " ON CONFLICT (kind, key) DO UPDATE SET due_at = EXCLUDED.due_at, payload = EXCLUDED.payload",
            timer.kind,
            timer.key,
            timer.due_at,
            orjson.dumps(dict(timer.payload)).decode(),
        )

    async def cancel(self, kind: str, key: str) -> None:
        await self._conn.execute("DELETE FROM timers WHERE kind = $1 AND key = $2", kind, key)


class TimerWorker:
    """Fires the service's due timers, each once, in its own transaction with its events."""

    def __init__(
        self,
        *,
        service: str,
        pool: Callable[[], asyncpg.Pool],
        handlers: Mapping[str, TimerHandler],
        unit: Callable[[asyncpg.Connection], Any],
        route: Callable[[Sequence[Event]], list[Outgoing]],
        dead_letter_topic: str,
        on_commit: Callable[[], None],
        exit_before_commit: bool = False,
    ) -> None:
        """``exit_before_commit``: fault injection for tests only (``BATON_FAULT_TIMER_EXIT_BEFORE_COMMIT``),
        the process exits (code 87) once a due timer is applied, before its transaction commits."""
        self._service = service
        self._pool = pool
        self._handlers = dict(handlers)
        self._unit = unit
        self._route = route
        self._dead_letter_topic = dead_letter_topic
        self._on_commit = on_commit
        self._exit_before_commit = exit_before_commit
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._handlers:
            self._task = asyncio.create_task(self._run(), name=f"timers-{self._service}")

    def wake(self) -> None:
        """A transaction committed: a timer due now may have been scheduled."""
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                fired = await self.fire_due()
                delay = 0.5
            except TRANSIENT_ERRORS as exc:
                log.warning("timers waiting for the database", extra={"error": repr(exc)})
                fired = 0
                delay = min(delay * 2, 5.0)
            if fired < BATCH:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S if fired == 0 else 0.0)
            if delay > 0.5:
                await asyncio.sleep(delay + random.uniform(0, delay / 2))

    async def fire_due(self) -> int:
        """Fire up to ``BATCH`` due timers, one transaction each; returns how many fired."""
        fired = 0
        while fired < BATCH and not self._stopping:
            async with self._pool().acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "DELETE FROM timers WHERE (kind, key) = (SELECT kind, key FROM timers"
                    " WHERE due_at <= now() AND kind = ANY($1::text[]) ORDER BY due_at"
                    " LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING kind, key, due_at, payload::text AS payload",
                    list(self._handlers),
                )
                if row is None:
                    return fired
                timer = Timer(row["kind"], row["key"], row["due_at"], orjson.loads(row["payload"]))
                try:
                    async with conn.transaction():  # a savepoint: a failing handler rolls back alone
                        events = await self._handlers[timer.kind](timer, self._unit(conn))
                        await write_outbox(conn, self._route(events))
                    if self._exit_before_commit:
                        log.warning(
                            "fault injection: exiting before the timer commits", extra={"key": timer.key}
                        )
                        os._exit(87)
                except TRANSIENT_ERRORS:
                    raise
                except Exception as exc:
                    # A handler that can never apply this timer: park it as a dead letter (the row
                    # stays deleted) rather than fire it forever.
                    log.error("timer failed; dead-lettering it", extra={"kind": timer.kind, "key": timer.key})
                    await write_outbox(
                        conn,
                        [
                            dead_letter_of(
                                self._dead_letter_topic,
                                key=timer.key,
                                value=orjson.dumps(
                                    {"kind": timer.kind, "key": timer.key, "payload": timer.payload}
                                ),
                                cause="timer_failed",
                                detail=f"{type(exc).__name__}: {exc}",
                                headers={"dlq-timer-kind": timer.kind},
                            )
                        ],
                    )
            fired += 1
            metrics.count(metrics.TIMERS_FIRED, self._service, timer.kind)
            self._on_commit()
        return fired


async def pending(conn: asyncpg.Connection) -> tuple[int, float | None]:
    """How many timers wait in this schema, and in how many seconds the next one is due (< 0: late)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM min(due_at) - now())::float8 AS next_in FROM timers"
    )
    return int(row["n"]), row["next_in"]
