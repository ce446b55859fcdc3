"""The ``Timers`` port in memory."""

from __future__ import annotations

from dataclasses import dataclass, field

from libs.platform.timers import Timer


@dataclass
class FakeTimers:
    scheduled: dict[tuple[str, str], Timer] = field(default_factory=dict)

    async def schedule(self, timer: Timer) -> None:
        self.scheduled[(timer.kind, timer.key)] = timer

    async def cancel(self, kind: str, key: str) -> None:
        self.scheduled.pop((kind, key), None)
