"""Fulfillment's own PostgreSQL store: locations it ships from, orders, shipments and their stages.

Set-based: each method is one statement for all the rows it is given (``unnest`` of arrays), and
none at all when it is given nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

import asyncpg
import orjson

from libs.contracts.vocabulary import LocationKind, ShippingMethod
from libs.platform.timer_worker import PgTimers
from services.fulfillment.domain.shipments import Location, Order, Shipment

ORDER_COLUMNS = "order_id, channel, shipping_method, lat, lon, progress, awaiting_resource"


def _order(row: asyncpg.Record) -> Order:
    return Order(
        row["order_id"],
        row["channel"],
        ShippingMethod(row["shipping_method"]),
        row["lat"],
        row["lon"],
        row["progress"],
        row["awaiting_resource"],
    )


def _shipment(row: asyncpg.Record) -> Shipment:
    return Shipment(
        row["shipment_id"],
        row["order_id"],
        row["location_id"],
        row["pipeline"],
        row["stage"],
        row["active"],
        orjson.loads(row["lines"]),
        row["stage_entered_at"],
        row["carrier"],
        row["tracking_number"],
    )


def _lines(s: Shipment) -> str:
    return orjson.dumps(dict(s.lines)).decode()


class PgOrders:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def lock(self, order_ids: Sequence[UUID]) -> dict[UUID, Order]:
        if not order_ids:
            return {}
        rows = await self._conn.fetch(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE",
            list(order_ids),
        )
        return {r["order_id"]: _order(r) for r in rows}

    async def lock_by_shipment(self, shipment_ids: Sequence[str]) -> dict[UUID, Order]:
        if not shipment_ids:
            return {}
        rows = await self._conn.fetch(
            f"SELECT {ORDER_COLUMNS} FROM orders"
            " WHERE order_id IN (SELECT order_id FROM shipments WHERE shipment_id = ANY($1::text[]))"
            " ORDER BY order_id FOR UPDATE OF orders",
            list(shipment_ids),
        )
        return {r["order_id"]: _order(r) for r in rows}

    async def save(self, orders: Sequence[Order]) -> None:
        """In order-id order: new orders are locked (inserted) in the same order as known ones."""
        if not orders:
            return
        await self._conn.execute(
            f"INSERT INTO orders ({ORDER_COLUMNS})"
            " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::float8[], $5::float8[],"
            " $6::text[], $7::bool[]) AS o(order_id, channel, shipping_method, lat, lon, progress, awaiting)"
            " ORDER BY order_id"
            " ON CONFLICT (order_id) DO UPDATE"
            " SET progress = EXCLUDED.progress, awaiting_resource = EXCLUDED.awaiting_resource",
            [o.order_id for o in orders],
            [o.channel for o in orders],
            [o.shipping_method.value for o in orders],
            [o.lat for o in orders],
            [o.lon for o in orders],
            [o.progress for o in orders],
            [o.awaiting_resource for o in orders],
        )


class PgShipments:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def of_orders(self, order_ids: Sequence[UUID]) -> list[Shipment]:
        if not order_ids:
            return []
        rows = await self._conn.fetch(
            "SELECT shipment_id, order_id, location_id, pipeline, stage, active, lines::text AS lines,"
            " stage_entered_at, carrier, tracking_number"
            " FROM shipments WHERE order_id = ANY($1::uuid[]) ORDER BY shipment_id",
            list(order_ids),
        )
        return [_shipment(r) for r in rows]

    async def add(self, shipments: Sequence[Shipment]) -> None:
        if not shipments:
            return
        await self._conn.execute(
            "INSERT INTO shipments (shipment_id, order_id, location_id, pipeline, stage, active, lines,"
            " stage_entered_at, carrier, tracking_number)"
            " SELECT s, o, l, p, st, a, li::jsonb, e, c, t FROM unnest($1::text[], $2::uuid[], $3::text[],"
            " $4::text[], $5::text[], $6::bool[], $7::text[], $8::timestamptz[], $9::text[], $10::text[])"
            " AS n(s, o, l, p, st, a, li, e, c, t)",
            [s.shipment_id for s in shipments],
            [s.order_id for s in shipments],
            [s.location_id for s in shipments],
            [s.pipeline for s in shipments],
            [s.stage for s in shipments],
            [s.active for s in shipments],
            [_lines(s) for s in shipments],
            [s.stage_entered_at for s in shipments],
            [s.carrier for s in shipments],
            [s.tracking_number for s in shipments],
        )

    async def save(self, shipments: Sequence[Shipment]) -> None:
        if not shipments:
            return
        await self._conn.execute(
            "UPDATE shipments SET stage = n.stage, active = n.active, lines = n.lines::jsonb,"
            " stage_entered_at = n.entered, carrier = n.carrier, tracking_number = n.tracking"
            " FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::timestamptz[], $6::text[],"
            " $7::text[]) AS n(shipment_id, stage, active, lines, entered, carrier, tracking)"
            " WHERE shipments.shipment_id = n.shipment_id",
            [s.shipment_id for s in shipments],
            [s.stage for s in shipments],
            [s.active for s in shipments],
            [_lines(s) for s in shipments],
            [s.stage_entered_at for s in shipments],
            [s.carrier for s in shipments],
            [s.tracking_number for s in shipments],
        )


class PgLocations:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def upsert(self, location: Location) -> None:
        await self._conn.execute(
            "INSERT INTO locations (location_id, kind, lat, lon) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (location_id) DO UPDATE SET kind = $2, lat = $3, lon = $4",
            location.location_id,
            location.kind.value,
            location.lat,
            location.lon,
        )

    async def of(self, location_ids: Sequence[str]) -> dict[str, Location]:
        if not location_ids:
            return {}
        rows = await self._conn.fetch(
            "SELECT location_id, kind, lat, lon FROM locations WHERE location_id = ANY($1::text[])",
            list(location_ids),
        )
        return {
            r["location_id"]: Location(r["location_id"], LocationKind(r["kind"]), r["lat"], r["lon"])
            for r in rows
        }


class PgAppliedUpdates:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def claim(self, updates: Sequence[tuple[str, str]]) -> set[str]:
        if not updates:
            return set()
        rows = await self._conn.fetch(
            "INSERT INTO applied_updates (update_id, shipment_id, outcome)"
            " SELECT u, s, 'claimed' FROM unnest($1::text[], $2::text[]) AS n(u, s)"
            " ON CONFLICT DO NOTHING RETURNING update_id",
            [update_id for update_id, _ in updates],
            [shipment_id for _, shipment_id in updates],
        )
        return {r["update_id"] for r in rows}

    async def record(self, outcomes: Mapping[str, str]) -> None:
        if not outcomes:
            return
        await self._conn.execute(
            "UPDATE applied_updates SET outcome = n.outcome"
            " FROM unnest($1::text[], $2::text[]) AS n(update_id, outcome)"
            " WHERE applied_updates.update_id = n.update_id",
            list(outcomes),
            list(outcomes.values()),
        )


class PgFulfillmentUnit:
    """Fulfillment's ports on one connection, for one transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.orders = PgOrders(conn)
        self.shipments = PgShipments(conn)
        self.locations = PgLocations(conn)
        self.updates = PgAppliedUpdates(conn)
        self.timers = PgTimers(conn)
