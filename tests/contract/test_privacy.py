"""The privacy contracts: erasure requests and outcomes, what erasing an order keeps, how records
are shown to people, and where the topology and topic table put them."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import orjson
import pytest
from pydantic import ValidationError

from libs.contracts.lifecycle import OrderReceived
from libs.contracts.orders import OrderDetails, OrderSubmitted
from libs.contracts.privacy import (
    ERASED,
    ERASED_EMAIL,
    ERASED_FIELDS,
    MASK,
    Erasure,
    ErasureApplied,
    ErasureRequested,
    carries_personal_data,
    covers,
    erase_order,
    redact_body,
    redact_text,
)
from libs.contracts.topics import (
    PRIVACY_ERASURE_REQUESTS,
    PRIVACY_ERASURES,
    TOPICS,
    WEEK_HOURS,
    dead_letter_topic,
)
from libs.contracts.topology import PUBLISHED_ON, TOPOLOGY, erasers, topics_for
from tests.support.orders import erasure_request, order

pytestmark = pytest.mark.contract

PERSON = {
    "customer": {"id": "cust-77", "email": "grace.hopper@example.org", "name": "Grace Hopper"},
    "shipping_address": {
        "name": "Grace B. Hopper",
        "line1": "Arlington Street 7",
        "line2": "Flat 3",
        "city": "Arlington",
        "postal_code": "22201",
        "country": "US",
        "lat": 38.88,
        "lon": -77.1,
    },
}
PERSONAL_STRINGS = [
    "cust-77",
    "grace.hopper@example.org",
    "Grace Hopper",
    "Grace B. Hopper",
    "Arlington Street 7",
    "Flat 3",
    "Arlington",
    "22201",
]


def details() -> OrderDetails:
    return OrderDetails.model_validate(order(country="US") | PERSON)


def test_an_erasure_request_round_trips_and_tolerates_new_fields() -> None:
    request = ErasureRequested.model_validate(erasure_request("cust-77", request_id="er-1"))
    assert ErasureRequested.model_validate_json(request.model_dump_json()) == request
    assert ErasureRequested.model_validate(request.model_dump(mode="json") | {"reason": "art. 17"}) == request
    assert ErasureRequested.model_validate(erasure_request("cust-77", channel=None)).channel is None


@pytest.mark.parametrize(
    "change",
    [
        {"requested_at": "2026-11-28T00:00:00"},
        {"customer_id": ""},
        {"request_id": ""},
        {"channel": "web shop"},
    ],
)
def test_an_erasure_request_needs_a_customer_an_id_a_plain_channel_and_a_zoned_time(
    change: dict[str, str],
) -> None:
    with pytest.raises(ValidationError):
        ErasureRequested.model_validate(erasure_request("cust-77") | change)


def test_an_erasure_outcome_is_an_event_keyed_by_its_request() -> None:
    outcome = ErasureApplied(request_id="er-1", service="intake", orders=2, rows_changed=3)
    body = orjson.loads(outcome.model_dump_json())
    assert body["event_type"] == "privacy.erasure-applied"
    assert outcome.partition_key() == "er-1"
    assert ErasureApplied.model_validate_json(outcome.model_dump_json()) == outcome


def test_erasing_an_order_removes_the_person_and_keeps_what_operations_need() -> None:
    before = details()
    erased = erase_order(before)
    text = erased.model_dump_json()

    assert not [s for s in PERSONAL_STRINGS if s in text]
    assert (erased.customer.id, erased.customer.email, erased.customer.name) == (ERASED, ERASED_EMAIL, ERASED)
    kept = {"channel", "external_id", "placed_at", "shipping_method", "currency", "lines", "payment"}
    assert {k: getattr(erased, k) for k in kept} == {k: getattr(before, k) for k in kept}
    assert erased.shipping_address.country == "US"
    assert set(ERASED_FIELDS) == {"customer", "shipping_address"}


def test_an_erased_order_is_still_a_valid_order_for_every_service_that_reads_it() -> None:
    """Erased details travel on (a held order released, a backorder allocated): they must parse."""
    erased = erase_order(details())
    assert OrderSubmitted.model_validate_json(erased.model_dump_json()).customer.email == ERASED_EMAIL
    fact = OrderReceived(order_id=uuid4(), order=erased)
    assert OrderReceived.model_validate_json(fact.model_dump_json()) == fact


def test_a_request_covers_its_customers_orders_on_its_channel_placed_before_it() -> None:
    order_ = details()  # webshop, placed 2026-11-27T10:00Z
    at = datetime(2026, 11, 28, tzinfo=UTC)

    def request(**fields: object) -> Erasure:
        base = {"request_id": "r", "customer_id": "cust-77", "channel": "webshop", "requested_at": at}
        return Erasure.of(ErasureRequested.model_validate(base | fields))

    assert covers(request(), order_)
    assert covers(request(channel=None), order_)
    assert not covers(request(channel="marketplace"), order_)
    assert not covers(request(customer_id="cust-7"), order_)
    assert not covers(request(requested_at=datetime(2026, 11, 27, 10, tzinfo=UTC)), order_)
    assert "cust-77" not in repr(request()), "a kept erasure holds a digest, not the id"


def test_a_dead_letter_body_is_shown_with_every_personal_value_masked_wherever_the_order_sits() -> None:
    submitted = orjson.dumps(order(country="US") | PERSON)
    fact = OrderReceived(order_id=uuid4(), order=details()).model_dump_json().encode()
    request = orjson.dumps(erasure_request("cust-77"))
    misfiled = orjson.dumps({"note": "call grace.hopper@example.org", "lines": []})

    for body in (submitted, fact, request):
        shown = redact_body(body)
        assert not [s for s in PERSONAL_STRINGS if s in shown], shown
        assert MASK in shown
    assert "grace.hopper@example.org" not in redact_body(misfiled)
    assert '"sku":"SKU-1"' in redact_body(submitted) and '"country":"US"' in redact_body(submitted)
    assert redact_body(b"Grace Hopper, not json") == "<22 bytes, not JSON: withheld>"


def test_an_error_about_a_record_is_shown_without_the_records_personal_values() -> None:
    body = orjson.dumps(order(country="US") | PERSON)
    error = "ValueError: cannot ship to Grace B. Hopper, Arlington Street 7 (ask bob@example.net)"

    shown = redact_text(error, body)

    assert not [s for s in [*PERSONAL_STRINGS, "bob@example.net"] if s in shown], shown
    assert shown.startswith("ValueError: cannot ship to ")


def test_the_privacy_topics_carry_the_requests_and_the_outcomes() -> None:
    assert topics_for(ErasureRequested) == (PRIVACY_ERASURE_REQUESTS,)
    assert topics_for(ErasureApplied) == (PRIVACY_ERASURES,)
    assert PUBLISHED_ON[ErasureRequested] == PRIVACY_ERASURE_REQUESTS
    specs = {spec.name: spec for spec in TOPICS}
    assert not specs[PRIVACY_ERASURE_REQUESTS].public and not specs[PRIVACY_ERASURES].public


def test_every_service_that_keeps_order_details_applies_erasures_and_reports_them() -> None:
    """Fulfillment keeps no personal data (only a coarse destination), so it has nothing to erase."""
    assert erasers() == ("intake", "validation", "allocation", "notification")
    for service in TOPOLOGY:
        applies = any(ErasureRequested in i.carries for i in service.inputs)
        assert applies == (ErasureApplied in service.emits), service.name


def test_dead_letters_of_inputs_that_carry_personal_data_are_kept_no_longer_than_the_data() -> None:
    retention = {spec.name: spec.retention_hours for spec in TOPICS}
    carrying = [
        s.name for s in TOPOLOGY if any(carries_personal_data(c) for i in s.inputs for c in i.carries)
    ]
    assert carrying == [s.name for s in TOPOLOGY], "every service's inputs carry personal data today"
    for service in carrying:
        assert retention[dead_letter_topic(service)] <= WEEK_HOURS
        for spec in (i for s in TOPOLOGY if s.name == service for i in s.inputs):
            assert retention[spec.topic] >= retention[dead_letter_topic(service)]
