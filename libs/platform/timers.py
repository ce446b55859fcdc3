"""Durable timers: deadlines that survive restarts and fire exactly once, whatever the number of
processes.

A use case schedules a timer through its unit of work (``Timers`` port), in the same transaction
as the state it belongs to; it is a row in the service's own ``timers`` table. This module is
driver-free (use cases' ports import it); ``timer_worker.py`` holds ``PgTimers`` and the
``TimerWorker`` each process runs, which takes due timers with ``FOR UPDATE SKIP LOCKED`` (two processes never take the
same one), deletes each in the transaction that applies its handler and writes the events the
handler returns to the outbox — so a timer fires once: a crash before that commit leaves the row,
and the timer fires after the restart; after the commit the row is gone. Never ``asyncio.sleep``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from libs.contracts.envelope import Event


@dataclass(frozen=True)
class Timer:
    """A deadline: ``kind`` names the handler, ``key`` what it is about (unique per kind)."""

    kind: str
    key: str
    due_at: datetime
    payload: Mapping[str, Any]


class Timers(Protocol):
    """The port use cases schedule and cancel deadlines through (same transaction as their state)."""

    async def schedule(self, timer: Timer) -> None:
        """Set (or move) the ``kind``/``key`` deadline."""
        ...

    async def cancel(self, kind: str, key: str) -> None:
        """Nothing fires for it any more (a no-op when it fired or never existed)."""
        ...


TimerHandler = Callable[[Timer, Any], Awaitable[Sequence[Event]]]
"""Applies a due timer with the service's unit of work; returns the events it caused."""
