"""Every event Baton publishes reads as a CloudEvent (Kafka binary mode) with the CloudEvents SDK."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import orjson
import pytest
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat

from libs.contracts.envelope import Event
from libs.contracts.lifecycle import OrderValidated
from libs.contracts.orders import OrderDetails, OrderRefused, Reason
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.records import Incoming, Outgoing
from libs.platform.routing import ServiceRouter
from tests.support.orders import order

pytestmark = pytest.mark.unit


def as_cloudevent(record: Outgoing) -> BaseCloudEvent:
    """What a consumer using the CloudEvents SDK gets from the record."""
    message = KafkaMessage(
        headers={k: v.encode() for k, v in record.headers.items()},
        key=record.key.encode(),
        value=record.value,
    )
    return from_kafka(message, JSONFormat())


def routed_by(service: str, *events: Event) -> list[Outgoing]:
    """The records the service's router makes of the events its handlers returned."""
    topology = SERVICE_TOPOLOGY[service]
    router: ServiceRouter[object] = ServiceRouter(topology, lambda conn: conn)
    for spec in topology.inputs:
        router.on(*spec.carries)(_nothing)
    return router.bind()[0].route(list(events))


async def _nothing(event: Any, uow: object) -> list[Event]:
    return []


def test_a_routed_event_is_a_cloudevent_whose_attributes_are_its_envelope() -> None:
    fact = OrderValidated(order_id=uuid4(), order=OrderDetails.model_validate(order()))

    records = routed_by("validation", fact)

    assert len(records) == 2  # to intake's and to allocation's facts
    for record in records:
        event = as_cloudevent(record)
        assert event.get_specversion() == "1.0"
        assert event.get_id() == str(fact.event_id)
        assert event.get_source() == "/baton/validation"
        assert event.get_type() == "order.validated"
        assert event.get_time() == fact.occurred_at
        assert event.get_subject() == str(fact.order_id)
        assert event.get_datacontenttype() == "application/json"
        assert event.get_extension("partitionkey") == str(fact.order_id)
        assert event.get_data() == orjson.loads(fact.model_dump_json())


def test_the_subject_is_the_partition_key_when_the_aggregate_is_not_an_order() -> None:
    refused = OrderRefused(channel="web", external_id="A-1", reasons=[Reason(code="c", message="m")])

    [record] = routed_by("intake", refused)

    assert as_cloudevent(record).get_subject() == "web:A-1" == record.key


def test_the_time_is_rfc3339_in_utc_whatever_zone_the_event_was_made_in() -> None:
    berlin = timezone(timedelta(hours=2))
    fact = OrderValidated(
        order_id=uuid4(),
        order=OrderDetails.model_validate(order()),
        occurred_at=datetime(2026, 11, 28, 10, 30, 0, 123456, tzinfo=berlin),
    )

    [record, _] = routed_by("validation", fact)

    assert record.headers["ce_time"] == "2026-11-28T08:30:00.123456Z"
    assert as_cloudevent(record).get_time() == datetime(2026, 11, 28, 8, 30, 0, 123456, tzinfo=UTC)


def test_baton_s_own_headers_stay_for_its_consumers_and_inboxes() -> None:
    fact = OrderValidated(order_id=uuid4(), order=OrderDetails.model_validate(order()))

    [record, _] = routed_by("validation", fact)

    assert record.headers["event_id"] == str(fact.event_id)
    assert record.headers["event_type"] == "order.validated"
    received = Incoming(record.topic, 0, 7, record.key, record.value, record.headers)
    assert (
        received.message_id(trust_event_id=True) == str(fact.event_id)
        and received.event_type == "order.validated"
    )
