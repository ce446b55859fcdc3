"""The short chaos run inside `make test` (the full one is `make chaos`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import run_chaos
from tests.support.infra import Infra

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]


async def test_the_fleet_loses_and_doubles_nothing_under_kills_restarts_and_garbage(
    infra: Infra, tmp_path: Path
) -> None:
    """Speed is `make chaos`'s business: here every invariant must hold, and the settle time is printed.
    The assertion names the violated invariants, so a CI log's summary line says which one."""
    violated = await run_chaos(
        orders=1000, rate=25, kill_every=3, infra=infra, log_dir=tmp_path / "logs", settle_limit_s=None
    )
    assert not violated, " | ".join(violated)
