"""Fulfillment's own PostgreSQL store: locations it ships from, orders, shipments and their stages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import orjson


@dataclass
class ShipmentRow:
    shipment_id: str
    order_id: UUID
    location_id: str
    pipeline: str
    stage: str
    active: bool
    lines: dict[str, int]
    carrier: str | None
    tracking_number: str | None
    stage_entered_at: datetime


@dataclass(frozen=True)
class OrderRow:
    order_id: UUID
    channel: str
    shipping_method: str
    lat: float | None
    lon: float | None
    progress: str | None
    awaiting_resource: bool = False
    """A parcel failed and its lines are not in a shipment yet (sourced again, or waiting for stock)."""


SHIPMENT_COLUMNS = (
    "shipment_id, order_id, location_id, pipeline, stage, active, lines::text AS lines, carrier, tracking_number,"
    " stage_entered_at"
)


def _shipment(row: asyncpg.Record) -> ShipmentRow:
    values = dict(row)
    values["lines"] = orjson.loads(values["lines"])
    return ShipmentRow(**values)


class PgFulfillmentStore:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def upsert_location(
        self, location_id: str, kind: str, lat: float | None, lon: float | None
    ) -> None:
        await self._conn.execute(
            "INSERT INTO locations VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (location_id) DO UPDATE SET kind = $2, lat = $3, lon = $4",
            location_id,
            kind,
            lat,
            lon,
        )

    async def location(self, location_id: str) -> tuple[str, float | None, float | None] | None:
        row = await self._conn.fetchrow(
            "SELECT kind, lat, lon FROM locations WHERE location_id = $1", location_id
        )
        return (row["kind"], row["lat"], row["lon"]) if row else None

    async def upsert_order(self, order: OrderRow) -> None:
        await self._conn.execute(
            "INSERT INTO orders (order_id, channel, shipping_method, lat, lon) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (order_id) DO NOTHING",
            order.order_id,
            order.channel,
            order.shipping_method,
            order.lat,
            order.lon,
        )

    async def lock_order(self, order_id: UUID) -> OrderRow | None:
        row = await self._conn.fetchrow(
            "SELECT order_id, channel, shipping_method, lat, lon, progress, awaiting_resource FROM orders"
            " WHERE order_id = $1 FOR UPDATE",
            order_id,
        )
        return OrderRow(**dict(row)) if row else None

    async def set_progress(self, order_id: UUID, progress: str | None) -> None:
        await self._conn.execute("UPDATE orders SET progress = $2 WHERE order_id = $1", order_id, progress)

    async def set_awaiting_resource(self, order_id: UUID, awaiting: bool) -> None:
        await self._conn.execute(
            "UPDATE orders SET awaiting_resource = $2 WHERE order_id = $1", order_id, awaiting
        )

    async def shipments_of(self, order_id: UUID) -> list[ShipmentRow]:
        rows = await self._conn.fetch(
            f"SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE order_id = $1 ORDER BY shipment_id", order_id
        )
        return [_shipment(r) for r in rows]

    async def shipment_order(self, shipment_id: str) -> UUID | None:
        value = await self._conn.fetchval(
            "SELECT order_id FROM shipments WHERE shipment_id = $1", shipment_id
        )
        return value if isinstance(value, UUID) else None

    async def insert_shipment(self, s: ShipmentRow) -> None:
        await self._conn.execute(
            "INSERT INTO shipments (shipment_id, order_id, location_id, pipeline, stage, active, lines, stage_entered_at)"
            " VALUES ($1, $2, $3, $4, $5, true, $6::jsonb, $7)",
            s.shipment_id,
            s.order_id,
            s.location_id,
            s.pipeline,
            s.stage,
            orjson.dumps(s.lines).decode(),
            s.stage_entered_at,
        )

    async def save_shipment(self, s: ShipmentRow) -> None:
        await self._conn.execute(
            "UPDATE shipments SET stage = $2, active = $3, lines = $4::jsonb, carrier = $5, tracking_number = $6,"
            " stage_entered_at = $7 WHERE shipment_id = $1",
            s.shipment_id,
            s.stage,
            s.active,
            orjson.dumps(s.lines).decode(),
            s.carrier,
            s.tracking_number,
            s.stage_entered_at,
        )

    async def record_update(self, update_id: str, shipment_id: str, outcome: str) -> bool:
        """False when this update id was seen before."""
        return bool(
            await self._conn.fetchval(
                "INSERT INTO applied_updates (update_id, shipment_id, outcome) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING true",
                update_id,
                shipment_id,
                outcome,
            )
        )
