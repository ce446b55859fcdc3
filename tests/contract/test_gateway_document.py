"""The gateway's OpenAPI 3.1 document (/openapi.json): valid, and its request body the very contract a
channel writes to `orders.submitted.v1` (generated from the model, so the two cannot drift apart)."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from libs.contracts.orders import OrderSubmitted
from services.gateway.entry import OPENAPI
from tests.support.orders import order

pytestmark = pytest.mark.contract

DOCUMENT_URI = "urn:baton:gateway"


def test_the_gateway_document_is_valid_openapi_3_1() -> None:
    assert OPENAPI["openapi"] == "3.1.0"
    validate(OPENAPI)


def test_the_order_body_is_the_submitted_contracts_schema() -> None:
    generated = OrderSubmitted.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = OPENAPI["components"]["schemas"]
    assert schemas["OrderSubmitted"] == {k: v for k, v in generated.items() if k != "$defs"}
    for name, schema in generated["$defs"].items():
        assert schemas[name] == schema


def problems(pointer: str, body: Any) -> list[str]:
    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT_URI, Resource.from_contents(OPENAPI, default_specification=DRAFT202012)
    )
    validator = Draft202012Validator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=registry)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(body)]


ORDER_BODY = "/paths/~1v1~1orders/post/requestBody/content/application~1json/schema"


def test_an_order_the_contract_accepts_is_valid_by_the_document_and_a_broken_one_is_not() -> None:
    body = order("web-1")
    OrderSubmitted.model_validate(body)
    assert problems(ORDER_BODY, body) == []
    broken = order("web-2")
    del broken["customer"]
    broken["lines"] = []
    assert len(problems(ORDER_BODY, broken)) == 2


def test_every_operation_declares_the_refusals_the_gateway_answers() -> None:
    for path in ("/v1/orders", "/v1/orders/{order_id}/cancel"):
        responses = OPENAPI["paths"][path]["post"]["responses"]
        assert {"202", "401", "403", "413", "422", "429", "503"} <= set(responses)
        assert "Retry-After" in responses["429"]["headers"]
