"""The public contracts: round trips, tolerance of new fields, clear errors, the AsyncAPI document."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from libs.contracts.asyncapi import render_asyncapi
from libs.contracts.catalog import ProductUpdated
from libs.contracts.inventory import LocationUpdated, StockAdjusted
from libs.contracts.lifecycle import LifecycleFact, OrderAllocated
from libs.contracts.orders import (
    OrderStatus,
    OrderStatusChanged,
    OrderSubmitted,
    Reason,
    Shipment,
    ShipmentLine,
)
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.platform.messaging import Incoming, Rejected
from libs.platform.routing import BoundInput, WholeBatch
from tests.support.orders import location, order, product

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]


def test_a_submitted_order_round_trips_with_money_as_decimal_strings() -> None:
    model = OrderSubmitted.model_validate(order(lines=[("A", 2, "19.90")]))
    as_json = orjson.loads(model.model_dump_json())
    assert as_json["lines"][0]["unit_price"] == "19.90"
    assert as_json["payment"]["amount"] == "39.80"
    assert OrderSubmitted.model_validate_json(model.model_dump_json()) == model
    assert model.lines[0].unit_price == Decimal("19.90")


def test_status_events_carry_the_envelope_and_round_trip() -> None:
    event = OrderStatusChanged(
        order_id=uuid4(),
        channel="web",
        external_id="1",
        status=OrderStatus.ALLOCATED,
        version=3,
        reasons=[Reason(code="x", message="y")],
        shipments=[Shipment(shipment_id="s", location_id="l", lines=[ShipmentLine(sku="A", quantity=1)])],
    )
    body = orjson.loads(event.model_dump_json())
    assert {"event_id", "event_type", "occurred_at", "schema_version", "order_id"} <= body.keys()
    assert body["occurred_at"].endswith("Z") or body["occurred_at"].endswith("+00:00")
    assert OrderStatusChanged.model_validate_json(event.model_dump_json()) == event


@pytest.mark.parametrize(
    "model,payload",
    [
        (OrderSubmitted, order()),
        (ProductUpdated, product("A")),
        (LocationUpdated, location("w")),
    ],
)
def test_unknown_extra_fields_are_tolerated(model, payload) -> None:  # type: ignore[no-untyped-def]
    model.model_validate(payload | {"added_in_v1_1": {"anything": True}})


def test_a_missing_required_field_is_rejected_with_a_clear_error() -> None:
    payload = order()
    del payload["customer"]
    with pytest.raises(ValidationError) as error:
        OrderSubmitted.model_validate(payload)
    assert error.value.errors()[0]["loc"] == ("customer",)
    assert error.value.errors()[0]["type"] == "missing"


def test_untrusted_records_become_rejections_naming_the_cause() -> None:
    intake = SERVICE_TOPOLOGY["intake"]
    submitted = BoundInput(intake, intake.input_for(OrderSubmitted), [], WholeBatch(), lambda conn: conn)
    bad_json = submitted.parse(Incoming("t", 0, 1, "k", b"{oops")).parsed
    assert isinstance(bad_json, Rejected) and bad_json.cause == "invalid_json"
    wrong_type = order() | {"lines": "many"}
    bad_shape = submitted.parse(Incoming("t", 0, 2, "k", orjson.dumps(wrong_type))).parsed
    assert isinstance(bad_shape, Rejected)
    assert bad_shape.cause == "schema_violation" and "lines" in bad_shape.detail


def test_an_adjustment_needs_exactly_one_of_delta_or_on_hand() -> None:
    StockAdjusted(adjustment_id="a", sku="s", location_id="l", delta=3)
    StockAdjusted(adjustment_id="a", sku="s", location_id="l", on_hand=0)
    for kwargs in ({}, {"delta": 1, "on_hand": 1}):
        with pytest.raises(ValidationError, match="exactly one"):
            StockAdjusted(adjustment_id="a", sku="s", location_id="l", **kwargs)


def test_lifecycle_facts_are_told_apart_by_event_type() -> None:
    allocated = OrderAllocated(order_id=uuid4(), shipments=[], order=OrderSubmitted.model_validate(order()))
    fact = TypeAdapter(LifecycleFact).validate_json(allocated.model_dump_json())
    assert isinstance(fact, OrderAllocated)


def test_the_committed_asyncapi_document_is_current() -> None:
    committed = (ROOT / "docs/asyncapi.yaml").read_text()
    assert committed == render_asyncapi(), (
        "run `baton contracts` (make contracts) and commit docs/asyncapi.yaml"
    )
    assert "asyncapi: 3.0.0" in committed
