"""The webhooks notification sends, as the OpenAPI 3.1 ``webhooks`` of the status API's document.

One entry per event a subscription can name (``baton webhooks add --events``): ``order.<status>``
for every order status, and ``stage.entered:{stage}`` / ``stage.left:{stage}`` for the stages of
fulfillment's pipelines (configuration, so one entry each stands for every stage), and
``shipment.late`` for a stage deadline missed. The body is
``{"type", "timestamp", "data"}`` (``domain/webhooks.py``), ``data`` being the public event's own
JSON; every POST carries the Standard Webhooks headers. A contract test validates the document
and checks real bodies against these schemas.
"""

from __future__ import annotations

from typing import Any

from libs.contracts.fulfillment import StageChanged
from libs.contracts.orders import OrderStatusChanged
from libs.contracts.sla import SlaBreached
from libs.contracts.vocabulary import OrderStatus
from services.notification.domain import webhooks

STAGE_ENTERED = "stage.entered:{stage}"
STAGE_LEFT = "stage.left:{stage}"

HEADERS: dict[str, Any] = {
    "WebhookId": {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "Unique per delivery (subscription and event) and the same on every retry of it: "
        "deduplicate on it.",
        "schema": {"type": "string", "pattern": "^msg_[0-9a-f]{32}$"},
    },
    "WebhookTimestamp": {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "When this attempt was sent, Unix time in seconds; refuse ones too far from now "
        "(replays).",
        "schema": {"type": "integer"},
    },
    "WebhookSignature": {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "Standard Webhooks signature: `v1,<base64 HMAC-SHA256 of "
        '"{webhook-id}.{webhook-timestamp}.{body}">` keyed with the subscription\'s secret (the bytes '
        "after `whsec_`, base64-decoded, or the secret as given); several are separated by spaces.",
        "schema": {"type": "string", "pattern": "^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)*$"},
    },
}

RESPONSES: dict[str, Any] = {
    "2XX": {"description": "Delivered: any 2xx answer ends the delivery."},
    "default": {
        "description": "Any other answer, a redirect, or none within `BATON_WEBHOOK_TIMEOUT_S` is retried "
        "with exponential back-off and jitter; after `BATON_WEBHOOK_MAX_ATTEMPTS` the delivery is dead "
        "(`baton webhooks list --dead`, `baton webhooks redeliver`)."
    },
}


def _body(kind: str, type_description: str, type_pattern: str, data: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"The body of every {kind} webhook.",
        "required": ["type", "timestamp", "data"],
        "properties": {
            "type": {"type": "string", "description": type_description, "pattern": type_pattern},
            "timestamp": {
                "type": "string",
                "format": "date-time",
                "description": "When the event happened: its `occurred_at`",
            },
            "data": {"$ref": f"#/components/schemas/{data}"},
        },
    }


def _webhook(key: str, summary: str, description: str, body: dict[str, Any]) -> dict[str, Any]:
    operation_id = "webhook_" + "".join(c if c.isalnum() else "_" for c in key.replace("{stage}", "stage"))
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "description": description,
            "parameters": [{"$ref": f"#/components/parameters/{name}"} for name in HEADERS],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": RESPONSES,
        }
    }


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "OrderStatusWebhook": _body(
            "order status", "`order.<status>`", r"^order\.[a-z_]+$", OrderStatusChanged.__name__
        ),
        "StageWebhook": _body(
            "stage",
            "`stage.entered:<stage>` or `stage.left:<stage>`",
            r"^stage\.(entered|left):.+$",
            StageChanged.__name__,
        ),
        "ShipmentLateWebhook": _body(
            "late shipment", "`shipment.late`", r"^shipment\.late$", SlaBreached.__name__
        ),
    }
    for model in (OrderStatusChanged, StageChanged, SlaBreached):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _webhooks() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for status in OrderStatus:
        key = webhooks.status_key(status)
        found[key] = _webhook(
            key,
            f"The order became `{status}`",
            f"Sent to subscriptions naming `{key}` (or `*`) when an order's status on `orders.status.v1` "
            f"becomes `{status}`; `data` is that status event.",
            {
                "allOf": [
                    {"$ref": "#/components/schemas/OrderStatusWebhook"},
                    {
                        "properties": {
                            "type": {"const": key},
                            "data": {"properties": {"status": {"const": status.value}}},
                        }
                    },
                ]
            },
        )
    for key, change, words in (
        (STAGE_ENTERED, "entered", "enters"),
        (STAGE_LEFT, "left", "leaves"),
    ):
        found[key] = _webhook(
            key,
            f"A shipment {words} a fulfillment stage",
            f"One per stage of fulfillment's pipelines (`baton pipelines`), e.g. `stage.{change}:packed`: sent "
            f"to subscriptions naming it (or `*`) when a shipment {words} that stage on "
            "`fulfillment.stage-changes.v1`; a move from one stage to the next is both. `data` is that "
            "stage event.",
            {
                "allOf": [
                    {"$ref": "#/components/schemas/StageWebhook"},
                    {"properties": {"type": {"pattern": rf"^stage\.{change}:.+$"}}},
                ]
            },
        )
    found[webhooks.SHIPMENT_LATE] = _webhook(
        webhooks.SHIPMENT_LATE,
        "A shipment missed its stage deadline",
        "Sent to subscriptions naming `shipment.late` (or `*`) once per shipment and stage visit, when a "
        "shipment stayed in a stage longer than the stage's `sla_hours` (`fulfillment.sla-breaches.v1`). "
        "`data` is that breach event, with how late it was and the re-computed ETA.",
        {"$ref": "#/components/schemas/ShipmentLateWebhook"},
    )
    return found


def with_webhooks(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the ``webhooks`` section and the schemas and header parameters it uses."""
    components = document.get("components", {})
    return {
        **document,
        "webhooks": _webhooks(),
        "components": {
            **components,
            "schemas": {**components.get("schemas", {}), **_schemas()},
            "parameters": {**components.get("parameters", {}), **HEADERS},
        },
    }
