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
from libs.contracts.topology import OUTSIDE_CONTRACTS, PUBLISHED_ON, producers_of
from tests.e2e.conftest import SLA_CHANNEL, LiveFleet
from tests.support.infra import Infra
from tests.support.kafka_io import TopicWatcher
from tests.support.orders import adjustment, location, order, product
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e

PUBLISHED = [spec.name for spec in topics.TOPICS if spec.public and producers_of(spec.name)]
"""The public topics Baton itself writes (the others are written by channels, warehouses, ...)."""
SHARED = {PUBLISHED_ON[contract] for contract in OUTSIDE_CONTRACTS}
"""Topics outsiders write too (commands a channel, a warehouse or the board may send): there only
Baton's own records are checked, told apart by the `event_id` header every Baton record carries."""


def baton_records(topic: str, watcher: TopicWatcher) -> list[Any]:
    if topic not in SHARED:
        return list(watcher.raw)
    return [r for r in watcher.raw if any(k == "event_id" for k, _ in r.headers)]


async def test_every_record_on_every_public_topic_baton_publishes_reads_as_a_cloudevent_of_its_envelope(
    live: LiveFleet, e2e_infra: Infra
) -> None:
    watchers = {topic: TopicWatcher(e2e_infra.kafka, live.prefix + topic) for topic in PUBLISHED}
    for watcher in watchers.values():
        await watcher.start()
    try:
        await one_record_on_each_public_topic(live, watchers[topics.RETURNS_STATUS])
        await watchers[topics.ORDERS_EDITS].wait_for(bool, 60, "the outcome of the edit request")
        await watchers[topics.FULFILLMENT_SLA_BREACHES].wait_for(bool, 60, "a late shipment")
        await watchers[topics.PAYMENTS_REFUND_REQUESTED].wait_for(bool, 60, "the refund of the return")
        for watcher in watchers.values():
            await watcher.caught_up(timeout=60)
        problems: list[str] = []
        for topic, watcher in watchers.items():
            records = baton_records(topic, watcher)
            # Baton writes the shared command topics only for the board's actions (tests/e2e/test_board.py)
            assert records or topic in SHARED, (
                f"no record on {topic}: extend the scenario so it publishes one"
            )
            sources = {cloudevents_source(p) for p in producers_of(topic)}
            problems += [
                f"{topic}@{r.partition}/{r.offset}: {p}" for r in records for p in mismatches(r, sources)
            ]
        assert problems == []
    finally:
        for watcher in watchers.values():
            await watcher.stop()


async def one_record_on_each_public_topic(live: LiveFleet, return_status: TopicWatcher) -> None:
    """An order into fulfillment (statuses, a stage change), a conflicting resubmission (refused),
    an edit request for an order that does not exist (its outcome, refused) and a cancel request
    (its outcome)."""
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
    await live.publisher.send(
        topics.ORDERS_EDIT_REQUESTED,
        "no-such-order",
        {
            "request_id": f"edit-{secrets.token_hex(4)}",
            "channel": "webshop",
            "external_id": "no-such-order",
            "lines": [{"sku": item, "quantity": 1, "unit_price": "10.00"}],
        },
    )
    await live.cancel(order_id, f"cancel-{secrets.token_hex(4)}")

    # A shipment late in its stage (the e2e fleet's SLA channel: deadlines of seconds) and a
    # delivered order returned and received (its return's statuses, the refund hand-off).
    late = await live.submit(order(lines=[(item, 1, "10.00")], channel=SLA_CHANNEL))
    await live.wait_status(late, "in_fulfillment")
    returned = order(lines=[(item, 1, "10.00")])
    placed = await live.wait_status(await live.submit(returned), "in_fulfillment")
    [shipment] = placed["shipments"]
    await live.move(shipment["shipment_id"], "delivered", carrier="DHL", tracking_number="JD0003")
    await live.wait_status(returned["external_id"], "delivered")
    rma = f"rma-{item}"
    await live.publisher.send(
        topics.RETURNS_REQUESTED,
        placed["order_id"],
        {
            "return_id": rma,
            "order_id": placed["order_id"],
            "lines": [{"sku": item, "quantity": 1}],
            "reason": "-",
        },
    )
    await return_status.wait_for(lambda rs: any(r.get("return_id") == rma for r in rs), 60, f"{rma} decided")
    await live.publisher.send(
        topics.RETURNS_RECEIVED,
        rma,
        {
            "return_id": rma,
            "location_id": wh,
            "lines": [{"sku": item, "quantity": 1, "condition": "resellable"}],
        },
    )
    await live.wait_status(returned["external_id"], "returned")


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
