"""A start-up step after the first checks waits for PostgreSQL or Kafka to come back, and only for them."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError

from libs.platform.startup import when_reachable

pytestmark = pytest.mark.unit


async def test_a_step_that_meets_a_restarting_database_or_broker_is_run_again_until_it_succeeds() -> None:
    failures: list[BaseException] = [ConnectionRefusedError(111, "refused"), KafkaConnectionError("gone")]
    calls = 0

    async def step() -> str:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return "sealed"

    assert await when_reachable(step, "sealing", first_pause_s=0.01) == "sealed"
    assert calls == 3


async def test_a_step_that_fails_for_another_reason_ends_start_up_at_once() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not a restart")

    with pytest.raises(ValueError, match="a bug"):
        await when_reachable(step, "sealing", first_pause_s=0.01)
    assert calls == 1
