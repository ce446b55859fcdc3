"""The inbox trusts an ``event_id`` header only on topics Baton's own services alone write."""

from __future__ import annotations

from uuid import uuid4

import orjson
import pytest

from libs.contracts.acls import CHANNEL_WRITES
from libs.contracts.lifecycle import OrderReceived
from libs.contracts.orders import OrderDetails, OrderSubmitted
from libs.contracts.topics import (
    FULFILLMENT_SLA_BREACHES,
    FULFILLMENT_STAGE_CHANGES,
    ORDERS_STATUS,
    RETURNS_STATUS,
    SERVICES,
    TOPICS,
    facts_topic,
)
from libs.contracts.topology import OUTSIDE_CONTRACTS, PUBLISHED_ON, TOPOLOGY, written_only_by_baton
from libs.platform.records import REPLAYED_FROM_HEADER, Incoming
from libs.platform.routing import BoundInput, Item, WholeBatch
from tests.support.orders import order

pytestmark = pytest.mark.unit

INTAKE = next(s for s in TOPOLOGY if s.name == "intake")
VALIDATION = next(s for s in TOPOLOGY if s.name == "validation")
SUBMITTED = BoundInput(INTAKE, INTAKE.input_for(OrderSubmitted), [], WholeBatch(), lambda conn: conn)
FACTS = BoundInput(VALIDATION, VALIDATION.input_for(OrderReceived), [], WholeBatch(), lambda conn: conn)


def inbox_keeps(items: list[Item]) -> list[Item]:
    """What the inbox lets through, as ``claim`` does: the first record of each id."""
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.message_id not in seen:
            seen.add(item.message_id)
            kept.append(item)
    return kept


def test_a_forged_event_id_on_an_outside_topic_cannot_shadow_a_real_record() -> None:
    real = order("real-1")
    claimed_id = str(uuid4())
    forged = Incoming(
        "orders.submitted.v1", 0, 10, "webshop:junk", orjson.dumps(order("junk")), {"event_id": claimed_id}
    )
    genuine = Incoming(
        "orders.submitted.v1", 3, 11, "webshop:real-1", orjson.dumps(real), {"event_id": claimed_id}
    )
    kept = inbox_keeps([SUBMITTED.parse(forged), SUBMITTED.parse(genuine)])
    assert [item.record for item in kept] == [forged, genuine], "the real order was dropped as a duplicate"
    assert {item.message_id for item in kept} == {"orders.submitted.v1/0/10", "orders.submitted.v1/3/11"}


def test_a_forged_replay_header_on_an_outside_topic_cannot_shadow_a_real_replay() -> None:
    headers = {REPLAYED_FROM_HEADER: "intake.dead-letters.v1@7", "event_id": "e-1"}
    forged = Incoming("orders.submitted.v1", 0, 20, "k", orjson.dumps(order("x")), headers)
    replay = Incoming("orders.submitted.v1", 0, 21, "k", orjson.dumps(order("y")), headers)
    assert len(inbox_keeps([SUBMITTED.parse(forged), SUBMITTED.parse(replay)])) == 2


def test_the_same_outside_record_delivered_again_is_recognised_by_its_position() -> None:
    record = Incoming("orders.submitted.v1", 2, 5, "k", orjson.dumps(order("again")))
    assert len(inbox_keeps([SUBMITTED.parse(record), SUBMITTED.parse(record)])) == 1


def test_an_event_the_relay_sent_twice_is_applied_once_and_each_replay_of_it_once() -> None:
    event = OrderReceived(order_id=uuid4(), order=OrderDetails.model_validate(order()))
    headers = {"event_id": str(event.event_id), "event_type": event.event_type}
    body = event.model_dump_json().encode()
    first = Incoming(facts_topic("validation"), 1, 100, "k", body, headers)
    resent = Incoming(facts_topic("validation"), 1, 140, "k", body, headers)
    replayed = Incoming(
        facts_topic("validation"),
        1,
        300,
        "k",
        body,
        headers | {REPLAYED_FROM_HEADER: "validation.dead-letters.v1@4"},
    )
    replayed_twice = Incoming(
        facts_topic("validation"),
        1,
        301,
        "k",
        body,
        headers | {REPLAYED_FROM_HEADER: "validation.dead-letters.v1@4"},
    )
    kept = inbox_keeps([FACTS.parse(r) for r in (first, resent, replayed, replayed_twice)])
    assert [item.record.offset for item in kept] == [100, 300]


def test_batons_own_inputs_are_the_facts_topics_and_its_public_events_and_no_other() -> None:
    every_input = {i.topic for s in TOPOLOGY for i in s.inputs}
    trusted = {topic for topic in every_input if written_only_by_baton(topic)}
    assert trusted == {
        *(facts_topic(s) for s in SERVICES),
        ORDERS_STATUS,
        FULFILLMENT_STAGE_CHANGES,
        RETURNS_STATUS,
        FULFILLMENT_SLA_BREACHES,
    }
    assert every_input - trusted == {PUBLISHED_ON[c] for c in OUTSIDE_CONTRACTS}
    assert not {spec.name for spec in TOPICS if written_only_by_baton(spec.name)} & set(CHANNEL_WRITES)
