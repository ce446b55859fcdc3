"""Fulfillment's own PostgreSQL store: locations it ships from, orders, shipments and their stages.

Set-based: each method is one statement for all the rows it is given (``unnest`` of arrays), and
none at all when it is given nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from uuid import UUID

import asyncpg
import orjson

from libs.contracts.vocabulary import LocationKind, ShippingMethod
from libs.platform.timer_worker import PgTimers
from services.fulfillment.domain.pipelines import Refusal
from services.fulfillment.domain.returns import Condition, ReceivedLine, Return, ReturnState, Terms
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
        row["carrier_eta"],
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
            " stage_entered_at, carrier, tracking_number, carrier_eta"
            " FROM shipments WHERE order_id = ANY($1::uuid[]) ORDER BY shipment_id",
            list(order_ids),
        )
        return [_shipment(r) for r in rows]

    async def add(self, shipments: Sequence[Shipment]) -> None:
        if not shipments:
            return
        await self._conn.execute(
            "INSERT INTO shipments (shipment_id, order_id, location_id, pipeline, stage, active, lines,"
            " stage_entered_at, carrier, tracking_number, carrier_eta)"
            " SELECT s, o, l, p, st, a, li::jsonb, e, c, t, eta FROM unnest($1::text[], $2::uuid[], $3::text[],"
            " $4::text[], $5::text[], $6::bool[], $7::text[], $8::timestamptz[], $9::text[], $10::text[],"
            " $11::timestamptz[]) AS n(s, o, l, p, st, a, li, e, c, t, eta)",
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
            [s.carrier_eta for s in shipments],
        )

    async def save(self, shipments: Sequence[Shipment]) -> None:
        if not shipments:
            return
        await self._conn.execute(
            "UPDATE shipments SET stage = n.stage, active = n.active, lines = n.lines::jsonb,"
            " stage_entered_at = n.entered, carrier = n.carrier, tracking_number = n.tracking,"
            " carrier_eta = n.eta"
            " FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::timestamptz[], $6::text[],"
            " $7::text[], $8::timestamptz[]) AS n(shipment_id, stage, active, lines, entered, carrier, tracking, eta)"
            " WHERE shipments.shipment_id = n.shipment_id",
            [s.shipment_id for s in shipments],
            [s.stage for s in shipments],
            [s.active for s in shipments],
            [_lines(s) for s in shipments],
            [s.stage_entered_at for s in shipments],
            [s.carrier for s in shipments],
            [s.tracking_number for s in shipments],
            [s.carrier_eta for s in shipments],
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


class PgOrderTerms:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def keep(self, terms: Sequence[Terms]) -> None:
        if not terms:
            return
        await self._conn.execute(
            "INSERT INTO order_terms (order_id, currency, payment_reference, prices, shipping_price)"
            " SELECT o, c, r, p::jsonb, s FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],"
            " $5::numeric[]) AS t(o, c, r, p, s) ON CONFLICT (order_id) DO NOTHING",
            [t.order_id for t in terms],
            [t.currency for t in terms],
            [t.payment_reference for t in terms],
            [orjson.dumps({k: str(v) for k, v in t.prices.items()}).decode() for t in terms],
            [t.shipping_price for t in terms],
        )

    async def of(self, order_id: UUID) -> Terms | None:
        row = await self._conn.fetchrow(
            "SELECT currency, payment_reference, prices::text AS prices, shipping_price"
            " FROM order_terms WHERE order_id = $1",
            order_id,
        )
        if row is None:
            return None
        prices = {k: Decimal(v) for k, v in orjson.loads(row["prices"]).items()}
        return Terms(order_id, row["currency"], row["payment_reference"], prices, row["shipping_price"])


RETURN_COLUMNS = (
    "return_id, order_id, state, lines::text AS lines, refusal_code, refusal_message,"
    " location_id, received::text AS received"
)


def _return(row: asyncpg.Record) -> Return:
    refusal = None
    if row["refusal_code"] is not None:
        refusal = Refusal(row["refusal_code"], row["refusal_message"] or "")
    return Return(
        row["return_id"],
        row["order_id"],
        ReturnState(row["state"]),
        orjson.loads(row["lines"]),
        refusal,
        row["location_id"],
        tuple(ReceivedLine(sku, q, Condition(c)) for sku, q, c in orjson.loads(row["received"])),
    )


def _received(ret: Return) -> str:
    return orjson.dumps([[r.sku, r.quantity, r.condition.value] for r in ret.received]).decode()


class PgReturns:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def get(self, return_id: str) -> Return | None:
        row = await self._conn.fetchrow(
            f"SELECT {RETURN_COLUMNS} FROM returns WHERE return_id = $1", return_id
        )
        return None if row is None else _return(row)

    async def of_order(self, order_id: UUID) -> list[Return]:
        rows = await self._conn.fetch(
            f"SELECT {RETURN_COLUMNS} FROM returns WHERE order_id = $1 ORDER BY return_id", order_id
        )
        return [_return(r) for r in rows]

    async def add(self, ret: Return) -> bool:
        added = await self._conn.fetchval(
            "INSERT INTO returns (return_id, order_id, state, lines, refusal_code, refusal_message)"
            " VALUES ($1, $2, $3, $4::jsonb, $5, $6) ON CONFLICT (return_id) DO NOTHING RETURNING true",
            ret.return_id,
            ret.order_id,
            ret.state.value,
            orjson.dumps(dict(ret.lines)).decode(),
            ret.refusal.code if ret.refusal else None,
            ret.refusal.message if ret.refusal else None,
        )
        return bool(added)

    async def save(self, ret: Return) -> None:
        await self._conn.execute(
            "UPDATE returns SET state = $2, location_id = $3, received = $4::jsonb,"
            " received_at = CASE WHEN $2 = 'received' THEN now() ELSE received_at END WHERE return_id = $1",
            ret.return_id,
            ret.state.value,
            ret.location_id,
            _received(ret),
        )


class PgFulfillmentUnit:
    """Fulfillment's ports on one connection, for one transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.orders = PgOrders(conn)
        self.shipments = PgShipments(conn)
        self.locations = PgLocations(conn)
        self.updates = PgAppliedUpdates(conn)
        self.terms = PgOrderTerms(conn)
        self.returns = PgReturns(conn)
        self.timers = PgTimers(conn)
