"""Nothing doubled: a relay that dies after sending re-sends, and consumers drop the duplicates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from libs.contracts import topics
from tests.support.infra import Infra, fresh_environment
from tests.support.kafka_io import Publisher, TopicWatcher, wait_consumed
from tests.support.orders import order, product

pytestmark = pytest.mark.integration


async def test_a_relay_killed_after_sending_resends_and_downstream_applies_each_event_once(
    infra: Infra, tmp_path: Path
) -> None:
    environment = await fresh_environment(infra)
    settings, prefix = environment.settings, environment.prefix
    fleet = environment.fleet(tmp_path)
    # What intake sends validation, and what validation sends intake (its verdicts).
    lifecycle = TopicWatcher(infra.kafka, settings.topic(topics.facts_topic("validation")))
    verdicts = TopicWatcher(infra.kafka, settings.topic(topics.facts_topic("intake")))
    status = TopicWatcher(infra.kafka, settings.topic(topics.ORDERS_STATUS))
    publisher = Publisher(infra.kafka, prefix)
    try:
        await publisher.start()
        await lifecycle.start()
        await verdicts.start()
        await status.start()
        fleet.start("validation")
        await publisher.send(topics.CATALOG_PRODUCTS, "DUP-1", product("DUP-1"))
        fleet.start("intake", extra_env={"BATON_FAULT_RELAY_EXIT_AFTER_SEND": "true"})
        await publisher.send(
            topics.ORDERS_SUBMITTED, "webshop:relay-1", order("relay-1", lines=[("DUP-1", 1, "10.00")])
        )

        # The relay sent `received` + `order.received`, then died before deleting its outbox rows.
        code = await asyncio.to_thread(fleet.processes["intake"].wait, 90)
        assert code == 86
        fleet.processes.pop("intake")
        fleet.start("intake")  # the new relay sends the same rows again

        def received_copies(records: list[dict]) -> list[dict]:  # type: ignore[type-arg]
            return [r for r in records if r.get("event_type") == "order.received"]

        await lifecycle.wait_for(lambda rs: len(received_copies(rs)) >= 2, 60, "the re-sent order.received")
        await status.wait_for(
            lambda rs: any(r["status"] in ("validated", "rejected") for r in rs),
            60,
            "the order to be validated",
        )
        # Validation has committed past every copy: a second validation would be there by now.
        await wait_consumed(
            infra.kafka,
            settings.group("validation", "order_facts"),
            settings.topic(topics.facts_topic("validation")),
        )
        # ...and its outbox is empty, so whatever it decided is on the topic, and read here.
        conn = await asyncpg.connect(environment.dsn)
        try:
            for _ in range(600):
                if await conn.fetchval("SELECT count(*) FROM validation.outbox") == 0:
                    break
                await asyncio.sleep(0.1)
            assert await conn.fetchval("SELECT count(*) FROM validation.outbox") == 0
        finally:
            await conn.close()
        await verdicts.caught_up()

        copies = received_copies(lifecycle.records)
        assert len({c["event_id"] for c in copies}) == 1, "the duplicates carry the same event id"
        decided = [
            r for r in verdicts.records if r.get("event_type") in ("order.validated", "order.rejected")
        ]
        assert len(decided) == 1, "validation applied the re-sent event once"
        versions = sorted((r["version"], r["event_id"]) for r in status.records)
        assert [v for v, _ in versions] == [1, 1, 2], "status v1 re-sent (same event), v2 published once"
        assert versions[0][1] == versions[1][1]
    finally:
        await lifecycle.stop()
        await verdicts.stop()
        await status.stop()
        await publisher.stop()
        fleet.stop()
        await environment.drop()
