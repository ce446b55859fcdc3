"""The active-subscription cache in front of PostgreSQL: read at most every second, never stale
after a change made in this process has ended."""

from __future__ import annotations

import asyncio

import pytest

from services.notification.adapters.store import SubscriptionCache
from services.notification.app.ports import Subscriber

pytestmark = pytest.mark.unit


class Table:
    """The subscriptions table as the cache's reads see it, counting reads."""

    def __init__(self) -> None:
        self.rows = [Subscriber("a", frozenset({"*"}))]
        self.reads = 0
        self.gate: asyncio.Event | None = None

    async def read(self) -> list[Subscriber]:
        self.reads += 1
        seen = list(self.rows)
        if self.gate is not None:
            await self.gate.wait()
        return seen


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_subscriptions_are_read_at_most_once_a_second() -> None:
    table, clock = Table(), Clock()
    cache = SubscriptionCache(ttl_s=1.0, clock=clock)
    for _ in range(5):
        await cache.active(table.read)
    clock.now = 0.9
    await cache.active(table.read)
    assert table.reads == 1
    clock.now = 1.1
    await cache.active(table.read)
    assert table.reads == 2


async def test_a_change_is_seen_as_soon_as_its_transaction_has_ended_and_cached_again_after() -> None:
    table, clock = Table(), Clock()
    cache = SubscriptionCache(ttl_s=1.0, clock=clock)
    await cache.active(table.read)
    in_transaction = True
    cache.changing(lambda: not in_transaction)
    table.rows.append(Subscriber("b", frozenset({"*"})))

    await cache.active(table.read)
    await cache.active(table.read)
    assert table.reads == 3, "while the change is under way every read goes to the table"

    in_transaction = False
    assert [s.subscription_id for s in await cache.active(table.read)] == ["a", "b"]
    await cache.active(table.read)
    assert table.reads == 4


async def test_a_read_that_started_before_a_change_is_not_kept() -> None:
    table, clock = Table(), Clock()
    cache = SubscriptionCache(ttl_s=1.0, clock=clock)
    table.gate = asyncio.Event()
    slow = asyncio.create_task(cache.active(table.read))
    await asyncio.sleep(0)
    cache.changing(lambda: True)
    table.rows.append(Subscriber("b", frozenset({"*"})))
    table.gate.set()
    assert [s.subscription_id for s in await slow] == ["a"]

    assert [s.subscription_id for s in await cache.active(table.read)] == ["a", "b"]
