"""The gateway's entry: its HTTP API (aiohttp) — request -> contract -> use case — and its OpenAPI 3.1 document.

Every `/v1` request needs `Authorization: Bearer <key>` (a channel key from `baton api-keys add`);
the checks run cheapest first, so a flood costs little: the key (401) and its token bucket (429 with
`Retry-After`; failed log-ins are limited per client address), the declared body size (413, before a
byte of the body is read; a body that turns out longer is cut off at the limit and answered 413
too), the body's shape (422, every failed field with its location), the key's channel (403), then
the record is produced and the answer, 202, waits for the broker's acknowledgement (acks=all). A
broker that does not acknowledge in time gets 503 with `Retry-After`: nothing was accepted.

The request body of `POST /v1/orders` is the `orders.submitted.v1` contract itself: its JSON Schema
in the document is generated from the contract model, so the two cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import Field, ValidationError

from libs import api_keys
from libs.api_keys import ApiKey, RateLimiter
from libs.contracts.envelope import Contract, Text
from libs.contracts.orders import Address, OrderLine, OrderSubmitted, Payment, ShipmentLine
from libs.platform import metrics
from services.gateway.app.ports import BrokerUnavailable, KeyDirectory, OrderCommands
from services.gateway.app.use_cases import (
    Accepted,
    CancelOrder,
    EditOrder,
    cancel_order,
    edit_order,
    submit_order,
)
from services.gateway.domain.requests import Refusal

OPEN_PATHS = frozenset({"/livez", "/readyz", "/openapi.json"})
API_KEY: web.RequestKey[ApiKey] = web.RequestKey("api_key", ApiKey)
IDEMPOTENCY_KEY = "Idempotency-Key"


class CancelBody(Contract):
    """The body of `POST /v1/orders/{order_id}/cancel`: the whole order (no ``lines``) or some lines."""

    request_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Idempotency key of the request; or send it as the `Idempotency-Key` header",
    )
    lines: list[ShipmentLine] | None = Field(default=None, description="Omit to cancel the whole order")
    reason: Text = Field(default="", max_length=2000)
    channel: Text | None = Field(
        default=None,
        max_length=64,
        description="The order's channel; needed only when the key acts for several channels",
    )


class EditBody(Contract):
    """The body of `POST /v1/orders/{order_id}/edit`: a new address, the complete new lines (with the
    payment covering them), or both — what `orders.edit-requested.v1` carries."""

    request_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Idempotency key of the request; or send it as the `Idempotency-Key` header",
    )
    shipping_address: Address | None = Field(default=None, description="The new address")
    lines: list[OrderLine] | None = Field(
        default=None, min_length=1, max_length=500, description="The order's complete new lines"
    )
    payment: Payment | None = Field(default=None, description="The payment covering the new lines")
    reason: Text = Field(default="", max_length=2000)
    channel: Text | None = Field(
        default=None,
        max_length=64,
        description="The order's channel; needed only when the key acts for several",
    )


def _schemas() -> dict[str, Any]:
    """Component schemas generated from the models; pydantic's ``$defs`` become components too."""
    components: dict[str, Any] = {}
    for model in (OrderSubmitted, CancelBody, EditBody):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return components


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}
}
_COMMON = {
    "401": {"description": "No key, or an unknown or revoked one", "content": _ERROR},
    "403": {"description": "The key may not act for this channel", "content": _ERROR},
    "413": {"description": "The body is larger than the gateway accepts", "content": _ERROR},
    "422": {
        "description": "The body is not valid: every failed field with its location",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ValidationFailed"}}},
    },
    "429": {
        "description": "Too many requests with this key (or failed log-ins from this address)",
        "headers": _RETRY_AFTER,
        "content": _ERROR,
    },
    "503": {
        "description": "The broker did not acknowledge the record in time; nothing was accepted",
        "headers": _RETRY_AFTER,
        "content": _ERROR,
    },
}
_IDEMPOTENCY = {
    "name": IDEMPOTENCY_KEY,
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 300},
}


def _order_request(operation_id: str, summary: str, body: str, outcomes: str) -> dict[str, Any]:
    """A request about an existing order (`POST /v1/orders/{order_id}/...`): the body schema, and the
    topic its outcome comes on."""
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": [
                {
                    "name": "order_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "format": "uuid"},
                },
                {**_IDEMPOTENCY, "description": "The request id, if the body has none"},
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
            },
            "responses": {
                "202": {
                    "description": f"The broker has the request; the outcome comes on `{outcomes}` (an"
                    " order of another channel is refused there as `unknown_order`, like one that does"
                    " not exist)",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/RequestAccepted"}}
                    },
                },
                "400": {"description": "order_id is not a UUID", "content": _ERROR},
                **_COMMON,
            },
        }
    }


def build_openapi() -> dict[str, Any]:
    """OpenAPI 3.1 of the gateway (served at `/openapi.json`)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Baton HTTP intake gateway",
            "version": "1.0.0",
            "description": "Submit, cancel and edit orders over HTTP. An accepted request is a record on"
            " `orders.submitted.v1` / `orders.cancel-requested.v1` / `orders.edit-requested.v1`,"
            " acknowledged by the broker; what becomes of it is on `orders.status.v1`,"
            " `orders.refused.v1`, `orders.cancellations.v1` and `orders.edits.v1`"
            " and in the status API. Keys come from `baton api-keys add --channel C`; a key acts for"
            " the channels it names only.",
        },
        "security": [{"bearerKey": []}],
        "paths": {
            "/v1/orders": {
                "post": {
                    "operationId": "submitOrder",
                    "summary": "Submit an order (the `orders.submitted.v1` contract)",
                    "parameters": [
                        {
                            **_IDEMPOTENCY,
                            "description": "`<channel>:<external_id>` of the order in the body; a"
                            " retry with it is the same order (same id), never a second one",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/OrderSubmitted"}}
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "The broker has the order; intake will give it this id",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/OrderAccepted"}}
                            },
                        },
                        **_COMMON,
                    },
                }
            },
            "/v1/orders/{order_id}/cancel": _order_request(
                "cancelOrder",
                "Request the cancellation of an order or some of its lines",
                "CancelBody",
                "orders.cancellations.v1",
            ),
            "/v1/orders/{order_id}/edit": _order_request(
                "editOrder",
                "Request an edit of an order before it ships (address, lines or both)",
                "EditBody",
                "orders.edits.v1",
            ),
            "/livez": {
                "get": {
                    "summary": "The process runs",
                    "security": [],
                    "responses": {"200": {"description": "alive"}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Producing to Kafka and every channel key read",
                    "security": [],
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A key from `baton api-keys add --channel C`: acts for those channels",
                }
            },
            "schemas": {
                **_schemas(),
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "ValidationFailed": {
                    "type": "object",
                    "required": ["error", "fields"],
                    "properties": {
                        "error": {"type": "string"},
                        "fields": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["loc", "msg", "type"],
                                "properties": {
                                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                                    "msg": {"type": "string"},
                                    "type": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "OrderAccepted": {
                    "type": "object",
                    "required": ["order_id", "channel", "external_id"],
                    "properties": {
                        "order_id": {"type": "string", "format": "uuid"},
                        "channel": {"type": "string"},
                        "external_id": {"type": "string"},
                    },
                },
                "RequestAccepted": {
                    "type": "object",
                    "required": ["order_id", "request_id"],
                    "properties": {
                        "order_id": {"type": "string", "format": "uuid"},
                        "request_id": {"type": "string"},
                    },
                },
            },
        },
    }


OPENAPI = build_openapi()


def build_api(
    commands: OrderCommands,
    keys: KeyDirectory,
    *,
    max_body_bytes: int,
    rate_per_s: float,
    burst: int,
    ready: Callable[[], bool] = lambda: True,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """Buckets are kept for keys that exist (a flood of made-up keys cannot push a real key's bucket
    out) and, apart, for client addresses whose log-ins failed."""
    limits = RateLimiter(rate_per_s, burst)
    failures = RateLimiter(rate_per_s, burst)

    @web.middleware
    async def measured(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
        response = await handler(request)
        metrics.GATEWAY_REQUESTS.labels(route, str(response.status)).inc()
        metrics.GATEWAY_SECONDS.labels(route).observe(time.perf_counter() - started)
        return response

    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        token = api_keys.bearer_token(request.headers.get("Authorization"))
        key: ApiKey | None = None
        if token is not None:
            digest = api_keys.digest(token)
            if wait := limits.waiting(digest, clock()):  # over its limit: not even a look-up
                return _too_many(wait)
            key = keys.find(digest)
            if key is not None and (wait := limits.take(digest, clock())):
                return _too_many(wait)
        if key is None:
            if wait := failures.take(str(request.remote), clock()):
                return _too_many(wait)
            return web.json_response(
                {"error": "a valid API key is required: Authorization: Bearer <key>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="baton"'},
            )
        request[API_KEY] = key
        return await handler(request)

    async def body(request: web.Request) -> bytes | web.Response:
        if request.content_length is not None and request.content_length > max_body_bytes:
            return _too_large(max_body_bytes)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(max_body_bytes)

    async def post_order(request: web.Request) -> web.Response:
        raw = await body(request)
        if isinstance(raw, web.Response):
            return raw
        try:
            order = OrderSubmitted.model_validate_json(raw)
        except ValidationError as exc:
            return _invalid(exc)
        return _answer(
            await _produce(
                submit_order(order, request[API_KEY], request.headers.get(IDEMPOTENCY_KEY), commands)
            ),
            lambda accepted: {
                "order_id": str(accepted.order_id),
                "channel": order.channel,
                "external_id": order.external_id,
            },
        )

    async def about_order(
        request: web.Request, act: Callable[[UUID, bytes, str | None], Awaitable[Accepted | Refusal]]
    ) -> web.Response:
        """A request about an existing order (cancel, edit): the path's order id, the body, then the
        use case ``act(order_id, body, idempotency_key)`` whose answer carries the request id."""
        try:
            order_id = UUID(request.match_info["order_id"])
        except ValueError:
            return web.json_response({"error": "order_id must be a UUID"}, status=400)
        raw = await body(request)
        if isinstance(raw, web.Response):
            return raw
        try:
            outcome = await _produce(act(order_id, raw or b"{}", request.headers.get(IDEMPOTENCY_KEY)))
        except ValidationError as exc:  # the body, or a request id from the header that no contract allows
            return _invalid(exc)
        return _answer(
            outcome, lambda accepted: {"order_id": str(accepted.order_id), "request_id": accepted.request_id}
        )

    async def post_cancel(request: web.Request) -> web.Response:
        async def act(order_id: UUID, raw: bytes, idempotency_key: str | None) -> Accepted | Refusal:
            cancel = CancelBody.model_validate_json(raw)
            command = CancelOrder(order_id, cancel.request_id, cancel.lines, cancel.reason, cancel.channel)
            return await cancel_order(command, request[API_KEY], idempotency_key, commands)

        return await about_order(request, act)

    async def post_edit(request: web.Request) -> web.Response:
        async def act(order_id: UUID, raw: bytes, idempotency_key: str | None) -> Accepted | Refusal:
            edit = EditBody.model_validate_json(raw)
            command = EditOrder(
                order_id,
                edit.request_id,
                edit.shipping_address,
                edit.lines,
                edit.payment,
                edit.reason,
                edit.channel,
            )
            return await edit_order(command, request[API_KEY], idempotency_key, commands)

        return await about_order(request, act)

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        if ready() and keys.ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    # client_max_size: aiohttp itself stops reading a body (chunked, or longer than declared) there.
    app = web.Application(middlewares=[measured, authenticate], client_max_size=max_body_bytes)
    app.add_routes(
        [
            web.post("/v1/orders", post_order),
            web.post("/v1/orders/{order_id}/cancel", post_cancel),
            web.post("/v1/orders/{order_id}/edit", post_edit),
            web.get("/openapi.json", openapi),
            web.get("/livez", livez),
            web.get("/readyz", readyz),
        ]
    )
    return app


async def _produce(pending: Awaitable[Accepted | Refusal]) -> Accepted | Refusal | BrokerUnavailable:
    try:
        return await pending
    except BrokerUnavailable as unavailable:
        return unavailable


def _answer(
    outcome: Accepted | Refusal | BrokerUnavailable, accepted: Callable[[Accepted], dict[str, Any]]
) -> web.Response:
    if isinstance(outcome, BrokerUnavailable):
        return web.json_response(
            {"error": "the order could not be handed to Kafka; nothing was accepted, retry"},
            status=503,
            headers={"Retry-After": "1"},
        )
    if isinstance(outcome, Refusal):
        return web.json_response({"error": outcome.error}, status=outcome.status)
    return web.json_response(accepted(outcome), status=202)


def _invalid(exc: ValidationError) -> web.Response:
    """422 with every failed field: where, what, which rule (never the rejected value: it may be
    personal data, and the caller has it anyway)."""
    fields = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return web.json_response({"error": "the body is not valid", "fields": fields}, status=422)


def _too_large(limit: int) -> web.Response:
    return web.json_response({"error": f"the body is larger than {limit} bytes"}, status=413)


def _too_many(wait_s: float) -> web.Response:
    return web.json_response(
        {"error": "too many requests"}, status=429, headers={"Retry-After": api_keys.retry_after(wait_s)}
    )
