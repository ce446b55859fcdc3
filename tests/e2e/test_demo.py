"""`baton demo` against the shared fleet: besides plain deliveries a run shows click-and-collect
orders, returns it plays itself (customer and warehouse), and late shipments."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from libs.cli.demo import DemoOptions, run_demo
from libs.platform.settings import BatonSettings
from libs.simulators.world import demo_shop
from tests.e2e.conftest import SLA_CHANNEL, LiveFleet, pipelines_with_a_short_deadline
from tests.support.infra import Infra
from tests.support.orders import unique_sku

pytestmark = pytest.mark.e2e


async def test_a_demo_run_shows_pickups_returns_and_late_shipments(
    live: LiveFleet, e2e_infra: Infra, tmp_path: Path
) -> None:
    # The fleet's pipelines (the same file it runs): the floor moves the SLA channel's shipments too,
    # slowly enough (2-5 s a stage) that its deadlines of seconds are missed now and then.
    fleet_pipelines = yaml.safe_load(pipelines_with_a_short_deadline(tmp_path).read_text())
    stages = {p["name"]: [s["name"] for s in p["stages"]] for p in fleet_pipelines["pipelines"]}
    settings = BatonSettings(
        kafka_bootstrap_servers=e2e_infra.bootstrap_servers,
        kafka_security=e2e_infra.security,
        topic_prefix=live.prefix,
    )
    run_id = f"demo-{unique_sku('e2e')}"
    options = DemoOptions(
        return_share=1.0,
        pickup_share=0.3,
        late_channel=SLA_CHANNEL,
        late_share=0.4,
        stages=stages,
        step_s=(2.0, 5.0),
        shop=demo_shop(sku_prefix=unique_sku("DEMO")),
    )
    outcome = await run_demo(settings, 2.0, 20.0, run_id, lambda: not live.fleet.exited(), options)

    assert outcome.statuses["returned"] + outcome.statuses["partially_returned"] >= 1, outcome.statuses
    assert outcome.returns.received >= 1 and not outcome.returns.pending, outcome.returns
    assert outcome.late >= 1
    assert outcome.statuses["rejected"] <= 8, (
        outcome.statuses
    )  # only the channel's deliberately invalid orders
    pickups = {
        r["external_id"]
        for r in live.status.records
        if str(r.get("external_id", "")).startswith(run_id) and r.get("status") == "ready_for_pickup"
    }
    assert pickups, "no click-and-collect order waited at its store"
    live.fleet.assert_alive()
