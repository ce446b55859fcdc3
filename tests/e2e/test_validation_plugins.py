"""Validation rules from a plugin package installed beside Baton (entry points) and from a dotted
path in the settings, on the real broker and database: they reject with their own reason codes,
see a customer's earlier orders of the day, and a rule that raises holds the order for review
without stopping anything."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from libs.contracts import topics
from tests.support.fleet import Fleet
from tests.support.infra import Environment, Infra, fresh_environment, fresh_name
from tests.support.kafka_io import Publisher, TopicWatcher
from tests.support.orders import order, product

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
PLUGIN = ROOT / "tests/plugins/baton-rules-example"
BROKEN_RULES = ROOT / "tests/support/broken_rules.py"
BROKEN_RULE = "broken_rules:explodes_on_boom"


def install_plugin(target: Path, scratch: Path) -> None:
    """Install the example plugin package as a shop would (pip-compatible install, its entry points
    registered), into a folder the validation process gets on its path, with a module of broken
    rules beside it for ``BATON_VALIDATION_RULES``. Built from a copy: the checkout stays clean."""
    source = scratch / "baton-rules-example"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    shutil.copy(BROKEN_RULES, target / "broken_rules.py")
    subprocess.run(
        [
            str(Path(sys.executable).parent / "uv"),
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--python",
            sys.executable,
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        timeout=300,
    )


@dataclass
class PluginFleet:
    env: dict[str, str]
    environment: Environment
    publisher: Publisher
    status: TopicWatcher
    fleet: Fleet

    async def products_known(self, *skus: str, timeout: float = 90) -> None:
        """Wait until validation has applied these catalog entries (its own copy of the catalog)."""
        deadline = asyncio.get_running_loop().time() + timeout
        conn = await asyncpg.connect(self.environment.dsn)
        try:
            while await conn.fetchval(
                "SELECT count(*) FROM validation.products WHERE sku = ANY($1::text[])", list(skus)
            ) < len(skus):
                assert asyncio.get_running_loop().time() < deadline, f"validation never applied {skus}"
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    async def status_of(self, external_id: str, timeout: float = 60) -> dict[str, Any]:
        """The first decision validation reached about the order (validated, rejected, on_hold)."""
        decided = {"validated", "rejected", "on_hold"}

        def found(records: list[dict[str, Any]]) -> bool:
            return any(r.get("external_id") == external_id and r.get("status") in decided for r in records)

        await self.status.wait_for(found, timeout, f"a validation decision about {external_id}")
        return next(
            r
            for r in self.status.records
            if r.get("external_id") == external_id and r.get("status") in decided
        )


@pytest.fixture(scope="module")
async def plugin_fleet(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PluginFleet]:
    site = tmp_path_factory.mktemp("plugins")
    await asyncio.to_thread(install_plugin, site, tmp_path_factory.mktemp("plugin-source"))
    environment = await fresh_environment(infra, "rules")
    env = {"PYTHONPATH": str(site), "BATON_VALIDATION_RULES": BROKEN_RULE}
    fleet = environment.fleet(tmp_path_factory.mktemp("rules-logs"), env)
    publisher = Publisher(infra.kafka, environment.prefix)
    status = TopicWatcher(infra.kafka, environment.settings.topic(topics.ORDERS_STATUS))
    try:
        fleet.start("intake")
        fleet.start("validation")
        await publisher.start()
        await status.start()
        yield PluginFleet(environment.service_env() | env, environment, publisher, status, fleet)
    finally:
        await status.stop()
        await publisher.stop()
        fleet.stop()
        await environment.drop()


async def test_rules_list_shows_the_plugin_rules_in_force_and_where_they_come_from(
    plugin_fleet: PluginFleet,
) -> None:
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "libs.cli.main", "rules", "list"],
        env=plugin_fleet.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert lines["no_po_box_for_express"][1:3] == ["reject", "po_box_express"]
    assert " ".join(lines["no_po_box_for_express"][3:]) == "baton-rules-example 0.1.0 (entry point)"
    assert lines["limited_sku_daily_limit"][1:3] == ["reject", "limited_sku_daily_limit"]
    assert " ".join(lines["explodes_on_boom"][3:]) == "BATON_VALIDATION_RULES"
    assert lines["unknown_sku"][3] == "built-in"


async def test_plugin_rules_reject_with_their_codes_count_the_day_and_a_broken_rule_only_holds(
    plugin_fleet: PluginFleet,
) -> None:
    run = fresh_name("r")
    mug, limited = f"MUG-{run}", f"LTD-{run}"
    for sku in (mug, limited):
        await plugin_fleet.publisher.send(topics.CATALOG_PRODUCTS, sku, product(sku))
    customer = f"cust-{run}"
    await plugin_fleet.products_known(mug, limited)

    async def submit(external_id: str, **fields: Any) -> None:
        body = order(external_id, customer_id=customer, **fields)
        await plugin_fleet.publisher.send(topics.ORDERS_SUBMITTED, f"webshop:{external_id}", body)

    await submit(
        f"{run}-box", method="express", lines=[(mug, 1, "10.00")], address={"line1": "Postfach 1201"}
    )
    await submit(f"{run}-box-standard", lines=[(mug, 1, "10.00")], address={"line1": "Postfach 1201"})
    await submit(f"{run}-ltd-a", lines=[(limited, 2, "10.00")])
    first = await plugin_fleet.status_of(f"{run}-ltd-a")
    await submit(f"{run}-ltd-b", lines=[(limited, 2, "10.00")])
    await submit(f"boom-{run}", lines=[(mug, 1, "10.00")])
    await submit(f"{run}-after", lines=[(mug, 1, "10.00")])

    box = await plugin_fleet.status_of(f"{run}-box")
    assert box["status"] == "rejected" and [r["code"] for r in box["reasons"]] == ["po_box_express"]
    assert (await plugin_fleet.status_of(f"{run}-box-standard"))["status"] == "validated"
    assert first["status"] == "validated"
    second = await plugin_fleet.status_of(f"{run}-ltd-b")
    assert second["status"] == "rejected"
    assert [(r["code"], r["sku"]) for r in second["reasons"]] == [("limited_sku_daily_limit", limited)]
    boom = await plugin_fleet.status_of(f"boom-{run}")
    assert boom["status"] == "on_hold" and [r["code"] for r in boom["reasons"]] == ["rule_error"]
    assert (await plugin_fleet.status_of(f"{run}-after"))["status"] == "validated", "nothing stopped"
    plugin_fleet.fleet.assert_alive()
    log = plugin_fleet.fleet.log("validation")
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(e.get("rule") == "explodes_on_boom" and e.get("error") == "ZeroDivisionError" for e in entries)
    assert "a bug in the plugin" not in log


async def test_a_rule_that_cannot_be_loaded_stops_validation_at_start_up_with_one_line(
    plugin_fleet: PluginFleet, tmp_path: Path
) -> None:
    env = plugin_fleet.environment.env_for("validation") | {
        "PYTHONPATH": plugin_fleet.env["PYTHONPATH"],
        "BATON_VALIDATION_RULES": "broken_rules:not_a_rule",
        "BATON_LOG_JSON": "false",
    }
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "libs.cli.main", "run", "validation"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "not_a_rule: not declared with @validation_rule" in lines[0]
