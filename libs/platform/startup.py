"""Start-up steps that wait for PostgreSQL or Kafka instead of ending the process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from libs.platform.messaging import TRANSIENT_ERRORS

log = logging.getLogger("baton.service")

T = TypeVar("T")

PAUSE_CAP_S = 5.0


async def when_reachable(step: Callable[[], Awaitable[T]], what: str, first_pause_s: float = 0.5) -> T:
    """Run a start-up step, waiting (with a pause that grows to ``PAUSE_CAP_S``) while PostgreSQL
    or Kafka is away: a restart or a rollout is waited for, also one that lands after the first
    checks passed, rather than ending the process. Any other error ends start-up at once.
    ``step`` must be safe to run again."""
    pause = first_pause_s
    while True:
        try:
            return await step()
        except TRANSIENT_ERRORS as exc:
            log.warning("start-up waiting for Kafka or PostgreSQL", extra={"step": what, "error": repr(exc)})
            await asyncio.sleep(pause)
            pause = min(pause * 2, PAUSE_CAP_S)
