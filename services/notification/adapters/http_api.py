"""The status API: current status, shipments with stage and tracking, ETA and timeline of an order.

Built only from public events (`orders.status.v1`, `fulfillment.stage-changes.v1`) that notification
already consumes, so it needs no access to another service's data.

Every `/orders` request needs `Authorization: Bearer <key>` (keys from `baton api-keys add`). A key
reads only its channels' orders: any other order is answered 404, exactly like one that does not
exist. Each key has a token bucket (``BATON_API_RATE_PER_S``, ``BATON_API_BURST``, per process);
failed log-ins are limited the same way per client address. Over the limit: 429 with `Retry-After`.
`/livez`, `/readyz` and `/openapi.json` stay open.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from aiohttp import web

from services.notification.adapters.board_web import API_KEY, COOKIE, OPEN_BOARD_PATHS, STATIC_PREFIX, Board
from services.notification.adapters.openapi_webhooks import with_webhooks
from services.notification.app.ports import OrderStatusQueries
from services.notification.domain import api_keys
from services.notification.domain.api_keys import ApiKey, RateLimiter

OPEN_PATHS = frozenset({"/livez", "/readyz", "/openapi.json", *OPEN_BOARD_PATHS})

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_DENIED = {
    "401": {"description": "No key, or an unknown or revoked one", "content": _ERROR},
    "404": {
        "description": "No such order, or one of a channel the key may not read (the two look alike)",
        "content": _ERROR,
    },
    "429": {
        "description": "Too many requests with this key (or failed log-ins from this address)",
        "headers": {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}
        },
        "content": _ERROR,
    },
}
_ORDER = {"application/json": {"schema": {"$ref": "#/components/schemas/OrderView"}}}

_ACTED = {
    "202": {"description": "The command was recorded and queued for Kafka", "content": {"text/html": {}}},
    "401": _DENIED["401"],
    "403": {
        "description": "A viewer's key (or, with the board's cookie, a request from another origin)",
        "content": {"text/html": {}},
    },
    "404": {"description": "Nothing of that id that the key may see", "content": {"text/html": {}}},
    "409": {
        "description": "Not possible now (e.g. not a later stage, not on hold)",
        "content": {"text/html": {}},
    },
    "429": _DENIED["429"],
}


def _action(summary: str, parameter: str, fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    form = {"type": "object", "properties": fields, "required": required}
    return {
        "post": {
            "summary": summary,
            "description": "A fulfillment board action, for an `operator` key: it publishes the public command"
            " named here and records who took it. The board's pages post the same form.",
            "parameters": [{"name": parameter, "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {
                "required": bool(required),
                "content": {"application/x-www-form-urlencoded": {"schema": form}},
            },
            "responses": _ACTED,
        }
    }


BOARD_ACTIONS: dict[str, Any] = {
    "/board/shipments/{shipment_id}/move": _action(
        "Move a shipment to a later stage of its pipeline (`fulfillment.updates.v1`)",
        "shipment_id",
        {"stage": {"type": "string"}},
        ["stage"],
    ),
    "/board/orders/{order_id}/hold": _action(
        "Release or reject an order on hold (`orders.hold-decisions.v1`)",
        "order_id",
        {"decision": {"type": "string", "enum": ["release", "reject"]}, "reason": {"type": "string"}},
        ["decision"],
    ),
    "/board/orders/{order_id}/cancel": _action(
        "Cancel the order, or with `scope=lines` the units given as `qty:<sku>` fields (`orders.cancel-requested.v1`)",
        "order_id",
        {
            "scope": {"type": "string", "enum": ["order", "lines"]},
            "reason": {"type": "string"},
        },
        [],
    ),
    "/board/deliveries/{delivery_id}/redeliver": _action(
        "Send a dead webhook delivery again (`notification.redeliveries.v1`; keys for every channel)",
        "delivery_id",
        {},
        [],
    ),
}
"""The board's actions as programs call them (``Authorization: Bearer``); its HTML pages are not listed."""

STATUS_API: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Baton order status API",
        "version": "1.0.0",
        "description": "Read-only view of orders, built from Baton's public events. Keys come from"
        " `baton api-keys add`; a key reads the orders of its channels only.",
    },
    "security": [{"bearerKey": []}],
    "paths": {
        "/orders/{order_id}": {
            "get": {
                "summary": "One order: status, shipments with stage and tracking, ETA, timeline",
                "parameters": [
                    {
                        "name": "order_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    }
                ],
                "responses": {
                    "200": {"description": "The order", "content": _ORDER},
                    "400": {"description": "Not a UUID", "content": _ERROR},
                    **_DENIED,
                },
            }
        },
        "/orders": {
            "get": {
                "summary": "Find an order by its channel and external id",
                "parameters": [
                    {"name": "channel", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "external_id", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "The order", "content": _ORDER},
                    "400": {"description": "A parameter is missing", "content": _ERROR},
                    **_DENIED,
                },
            }
        },
        **BOARD_ACTIONS,
        "/livez": {
            "get": {
                "summary": "The process runs",
                "security": [],
                "responses": {"200": {"description": "alive"}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Connected to PostgreSQL",
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
                "description": "A key from `baton api-keys add`, scoped to one or more channels (or all)",
            }
        },
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            "OrderView": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "format": "uuid"},
                    "channel": {"type": "string"},
                    "external_id": {"type": "string"},
                    "status": {"type": "string"},
                    "version": {"type": "integer"},
                    "eta": {"type": ["string", "null"], "format": "date-time"},
                    "shipments": {"type": "array", "items": {"type": "object"}},
                    "timeline": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
    },
}

OPENAPI = with_webhooks(STATUS_API)
"""What /openapi.json serves: the status API and the webhooks notification sends (``openapi_webhooks.py``)."""


def build_api(
    queries: OrderStatusQueries,
    rate_per_s: float,
    burst: int,
    clock: Callable[[], float] = time.monotonic,
    board: Board | None = None,
) -> web.Application:
    """Buckets are kept for keys that exist (so a flood of made-up keys cannot push a real key's
    bucket out) and, apart, for client addresses whose log-ins failed.

    The board's pages take the key from its cookie as well; a page asked for without one goes to
    the log-in page, and an action (POST) carried by the cookie must come from the board's own
    origin (with SameSite=Strict, a second guard against cross-site requests)."""
    keys = RateLimiter(rate_per_s, burst)
    failures = RateLimiter(rate_per_s, burst)

    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in OPEN_BOARD_PATHS and request.method == "POST":  # the board's log-in form
            if wait := failures.waiting(str(request.remote), clock()):
                return _too_many(wait)
            response = await handler(request)
            if response.status == 401:
                failures.take(str(request.remote), clock())
            return response
        if request.path in OPEN_PATHS or request.path.startswith(STATIC_PREFIX + "/"):
            return await handler(request)
        on_board = request.path == "/board" or request.path.startswith("/board/")
        token = api_keys.bearer_token(request.headers.get("Authorization"))
        if token is None and on_board:
            token = request.cookies.get(COOKIE)
            if token and request.method != "GET" and not _same_origin(request):
                return web.json_response({"error": "actions come from the board's own pages"}, status=403)
        key: ApiKey | None = None
        if token is not None:
            digest = api_keys.digest(token)
            if wait := keys.waiting(digest, clock()):  # over its limit: not even a look-up
                return _too_many(wait)
            key = await queries.api_key(digest)
            if key is not None and (wait := keys.take(digest, clock())):
                return _too_many(wait)
        if key is None:
            if wait := failures.take(str(request.remote), clock()):
                return _too_many(wait)
            if on_board and request.method == "GET":
                raise web.HTTPSeeOther("/board/login")
            return web.json_response(
                {"error": "a valid API key is required: Authorization: Bearer <key>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="baton"'},
            )
        request[API_KEY] = key
        return await handler(request)

    async def get_order(request: web.Request) -> web.Response:
        try:
            order_id = UUID(request.match_info["order_id"])
        except ValueError:
            return web.json_response({"error": "order_id must be a UUID"}, status=400)
        view = await queries.order(order_id)
        if view is None or not request[API_KEY].may_read(view["channel"]):
            return _not_found()
        return web.json_response(view)

    async def find_order(request: web.Request) -> web.Response:
        channel, external_id = request.query.get("channel"), request.query.get("external_id")
        if not channel or not external_id:
            return web.json_response({"error": "channel and external_id are required"}, status=400)
        if not request[API_KEY].may_read(channel):
            return _not_found()
        order_id = await queries.find(channel, external_id)
        view = await queries.order(order_id) if order_id else None
        return web.json_response(view) if view else _not_found()

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        if await queries.ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    app = web.Application(middlewares=[authenticate])
    if board is not None:
        app.add_routes(board.routes())
        app.on_shutdown.append(board.on_shutdown)
    app.add_routes(
        [
            web.get("/orders/{order_id}", get_order),
            web.get("/orders", find_order),
            web.get("/openapi.json", openapi),
            web.get("/livez", livez),
            web.get("/readyz", readyz),
        ]
    )
    return app


def _same_origin(request: web.Request) -> bool:
    """The request's Origin (or, lacking one, its Referer) names this very host."""
    from urllib.parse import urlsplit

    origin = request.headers.get("Origin") or request.headers.get("Referer") or ""
    return bool(origin) and urlsplit(origin).netloc == request.host


def _not_found() -> web.Response:
    return web.json_response({"error": "no such order"}, status=404)


def _too_many(wait_s: float) -> web.Response:
    return web.json_response(
        {"error": "too many requests"}, status=429, headers={"Retry-After": api_keys.retry_after(wait_s)}
    )
