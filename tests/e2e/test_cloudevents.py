"""On the real fleet, every record of every public topic Baton publishes is a CloudEvent.

Read with the CloudEvents Python SDK (Kafka binding, binary mode) as a subscriber would, each
record's attributes must be its payload's envelope: id = `event_id`, type = `event_type`,
time = `occurred_at`, source = the service that publishes the topic, subject = the record's key.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat

from libs.contracts import topics
from libs.contracts.headers import cloudevents_source
from libs.contracts.topology import producers_of
from tests.e2e.conftest import LiveFleet
from tests.support.infra import Infra
from tests.support.kafka_io import TopicWatcher
from tests.support.orders import adjustment, location, order, product
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e

PUBLISHED = [spec.name for spec in topics.TOPICS if spec.public and producers_of(spec.name)]
"""The public topics Baton itself writes (the others are written by channels, warehouses, ...)."""


async def test_every_record_on_every_public_topic_baton_publishes_reads_as_a_cloudevent_of_its_envelope(
    live: LiveFleet, e2e_infra: Infra
) -> None:
    watchers = {topic: TopicWatcher(e2e_infra.kafka, live.prefix + topic) for topic in PUBLISHED}
    for watcher in watchers.values():
        await watcher.start()
    try:
        await one_record_on_each_public_topic(live)
        for watcher in watchers.values():
            await watcher.caught_up(timeout=60)
        problems: list[str] = []
        for topic, watcher in watchers.items():
            assert watcher.raw, f"no record on {topic}: extend the scenario so it publishes one"
            sources = {cloudevents_source(p) for p in producers_of(topic)}
            problems += [
                f"{topic}@{r.partition}/{r.offset}: {p}" for r in watcher.raw for p in mismatches(r, sources)
            ]
        assert problems == []
    finally:
        for watcher in watchers.values():
            await watcher.stop()


async def one_record_on_each_public_topic(live: LiveFleet) -> None:
    """An order into fulfillment (statuses, a stage change), a conflicting resubmission (refused),
    and a cancel request (its outcome)."""
    item = sku("CE")
    wh = f"wh-{item}"
    await live.seed(
        products=[product(item)],
        locations=[location(wh)],
        adjustments=[adjustment(f"init-{item}", item, wh, delta=5)],
    )
    original = order(lines=[(item, 1, "10.00")])
    external_id = await live.submit(original)
    order_id = (await live.wait_status(external_id, "allocated"))["order_id"]
    await live.stages.wait_for(
        lambda rs: any(r.get("order_id") == order_id for r in rs), 60, f"{order_id} to enter a pipeline"
    )
    await live.submit(original | {"currency": "USD"})
    await live.refused.wait_for(
        lambda rs: any(r.get("external_id") == external_id for r in rs), 60, "the conflicting resubmission"
    )
    await live.cancel(order_id, f"cancel-{secrets.token_hex(4)}")


def mismatches(record: Any, sources: set[str]) -> list[str]:
    """How the CloudEvent read from the record differs from the record's own envelope."""
    message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    event = from_kafka(message, JSONFormat())
    body = orjson.loads(record.value)
    key = record.key.decode()
    expected: dict[str, Any] = {
        "specversion": "1.0",
        "id": body["event_id"],
        "type": body["event_type"],
        "time": datetime.fromisoformat(body["occurred_at"]),
        "subject": key,
        "datacontenttype": "application/json",
        "partitionkey": key,
    }
    found = event.get_attributes()
    wrong = [
        f"{name} is {found.get(name)!r}, not {value!r}"
        for name, value in expected.items()
        if found.get(name) != value
    ]
    if event.get_source() not in sources:
        wrong.append(f"source {event.get_source()!r} is not one of {sorted(sources)}")
    if event.get_data() != body:
        wrong.append("data is not the record's value")
    return wrong
