"""The status API's OpenAPI 3.1 document (/openapi.json): valid, and its webhooks true to what is sent.

Validated with `openapi-spec-validator` (the OpenAPI 3.1 schema plus its semantic checks: every
`$ref` resolves, parameters are well formed, operation ids are unique). The webhook bodies checked
against it are made by notification's own use cases, as deliveries are.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry, Resource
from referencing.exceptions import PointerToNowhere
from referencing.jsonschema import DRAFT202012

from libs.contracts.fulfillment import StageChanged
from libs.contracts.notification import WebhookSubscriptionChanged
from libs.contracts.orders import OrderStatusChanged
from libs.contracts.sla import SlaBreached
from libs.contracts.vocabulary import OrderStatus
from services.notification.adapters.http_api import OPENAPI
from services.notification.adapters.openapi_webhooks import STAGE_ENTERED, STAGE_LEFT
from services.notification.app.use_cases import (
    change_subscription,
    record_sla_breaches,
    record_stage_changes,
    record_status_changes,
)
from services.notification.domain import webhooks
from tests.unit.fakes.notification import FakeNotificationStore
from tests.unit.test_notification_use_cases import BOX, SECRET, guard

pytestmark = pytest.mark.contract

DOCUMENT_URI = "urn:baton:status-api"
STANDARD_WEBHOOKS_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def test_the_status_api_document_is_valid_openapi_3_1() -> None:
    assert OPENAPI["openapi"] == "3.1.0"
    validate(OPENAPI)


def test_the_validator_refuses_a_wrong_parameter_and_a_reference_that_leads_nowhere() -> None:
    wrong_parameter = copy.deepcopy(OPENAPI)
    wrong_parameter["webhooks"]["order.shipped"]["post"]["parameters"].append({"name": "x", "in": "body"})
    with pytest.raises(OpenAPIValidationError):
        validate(wrong_parameter)
    dangling = copy.deepcopy(OPENAPI)
    del dangling["components"]["schemas"]["OrderStatusChanged"]
    with pytest.raises(PointerToNowhere):
        validate(dangling)


def test_every_webhook_a_subscription_can_name_is_documented_with_the_standard_webhooks_headers() -> None:
    expected = {webhooks.status_key(s) for s in OrderStatus} | {
        STAGE_ENTERED,
        STAGE_LEFT,
        webhooks.SHIPMENT_LATE,
    }
    assert set(OPENAPI["webhooks"]) == expected
    parameters = OPENAPI["components"]["parameters"]
    for name, item in OPENAPI["webhooks"].items():
        post = item["post"]
        named = [parameters[p["$ref"].rsplit("/", 1)[1]] for p in post["parameters"]]
        assert sorted((p["name"], p["in"], p["required"]) for p in named) == sorted(
            (h, "header", True) for h in STANDARD_WEBHOOKS_HEADERS
        ), name
        assert post["requestBody"]["content"]["application/json"]["schema"]


def test_the_delivery_id_and_signature_match_their_documented_header_formats() -> None:
    parameters = {p["name"]: p for p in OPENAPI["components"]["parameters"].values()}
    webhook_id = webhooks.delivery_id("sub_1", str(uuid4()))
    signature = webhooks.sign("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=", webhook_id, 1_790_000_000, b"{}")
    assert re.fullmatch(parameters["webhook-id"]["schema"]["pattern"], webhook_id)
    assert re.fullmatch(parameters["webhook-signature"]["schema"]["pattern"], signature)


async def test_every_webhook_body_notification_makes_matches_its_documented_schema() -> None:
    store = FakeNotificationStore()
    subscribe = WebhookSubscriptionChanged(
        action="add",
        subscription_id="all",
        url="https://example.test/hook",
        secret_ciphertext=BOX.seal(SECRET),
        events=["*"],
    )
    assert await change_subscription(subscribe, store.unit(), guard(), BOX) == []
    order_id = uuid4()
    when = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    changes = [
        OrderStatusChanged(
            order_id=order_id, channel="web", external_id="A-1", status=s, version=n, occurred_at=when
        )
        for n, s in enumerate(OrderStatus, start=1)
    ]
    await record_status_changes(changes, store.unit())
    moved = StageChanged(
        order_id=order_id,
        shipment_id="s1",
        pipeline="standard",
        left_stage="picking",
        entered_stage="packed",
        change="moved",
    )
    await record_stage_changes([moved], store.unit())
    late = SlaBreached(
        order_id=order_id,
        shipment_id="s1",
        pipeline="standard",
        stage="picking",
        sla_hours=24,
        stage_entered_at=when,
        due_at=when,
        overdue_seconds=5,
        eta=when,
    )
    await record_sla_breaches([late], store.unit())

    deliveries = store.deliveries_of("all")
    assert {d.event_key for d in deliveries} == {webhooks.status_key(s) for s in OrderStatus} | {
        "stage.entered:packed",
        "stage.left:picking",
        "shipment.late",
    }
    for delivery in deliveries:
        name = re.sub(r":.+$", ":{stage}", delivery.event_key)
        assert body_problems(name, orjson.loads(delivery.body)) == [], delivery.event_key
    shipped = next(orjson.loads(d.body) for d in deliveries if d.event_key == "order.shipped")
    assert body_problems("order.delivered", shipped), "each status documents its own type and status"
    assert body_problems(STAGE_LEFT, {**shipped, "type": "stage.entered:packed"})
    assert body_problems("shipment.late", {**shipped, "type": "shipment.late"}), "a breach's data is a breach"


def body_problems(webhook: str, body: dict[str, Any]) -> list[str]:
    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT_URI, Resource.from_contents(OPENAPI, default_specification=DRAFT202012)
    )
    pointer = "/webhooks/" + webhook.replace("~", "~0").replace("/", "~1")
    validator = Draft202012Validator(
        {"$ref": f"{DOCUMENT_URI}#{pointer}/post/requestBody/content/application~1json/schema"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(body)]
