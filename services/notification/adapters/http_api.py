"""The status API: current status, shipments with stage and tracking, ETA and timeline of an order.

Built only from public events (`orders.status.v1`, `fulfillment.stage-changes.v1`) that notification
already consumes, so it needs no access to another service's data.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from services.notification.adapters.openapi_webhooks import with_webhooks
from services.notification.app.ports import OrderStatusQueries

STATUS_API: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Baton order status API",
        "version": "1.0.0",
        "description": "Read-only view of orders, built from Baton's public events.",
    },
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
                    "200": {
                        "description": "The order",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/OrderView"}}
                        },
                    },
                    "404": {"description": "No such order"},
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
                    "200": {
                        "description": "The order",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/OrderView"}}
                        },
                    },
                    "404": {"description": "No such order"},
                },
            }
        },
        "/livez": {"get": {"summary": "The process runs", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {
            "get": {
                "summary": "Connected to PostgreSQL",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
    },
    "components": {
        "schemas": {
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
            }
        }
    },
}

OPENAPI = with_webhooks(STATUS_API)
"""What /openapi.json serves: the status API and the webhooks notification sends (``openapi_webhooks.py``)."""


def build_api(queries: OrderStatusQueries) -> web.Application:
    async def get_order(request: web.Request) -> web.Response:
        try:
            order_id = UUID(request.match_info["order_id"])
        except ValueError:
            return web.json_response({"error": "order_id must be a UUID"}, status=400)
        view = await queries.order(order_id)
        return web.json_response(view) if view else web.json_response({"error": "no such order"}, status=404)

    async def find_order(request: web.Request) -> web.Response:
        channel, external_id = request.query.get("channel"), request.query.get("external_id")
        if not channel or not external_id:
            return web.json_response({"error": "channel and external_id are required"}, status=400)
        order_id = await queries.find(channel, external_id)
        view = await queries.order(order_id) if order_id else None
        return web.json_response(view) if view else web.json_response({"error": "no such order"}, status=404)

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        if await queries.ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    app = web.Application()
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
