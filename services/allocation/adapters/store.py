"""Allocation's own PostgreSQL store: locations, stock, adjustments, allocations and reservations.

Stock rows are locked (``FOR UPDATE``, in sku/location order) after the per-sku transaction locks
and before planning; reservations are written set-based by one conditional statement whose row
count is checked, with ``CHECK (reserved <= on_hand)`` as the last line of defence: two allocation
processes can never reserve the same unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg
import orjson

from libs.contracts.orders import OrderDetails
from libs.contracts.privacy import ErasureRequested
from libs.platform.erasure_store import ERASED_PATCH, PgErasureLedger, covered, erased_json
from libs.platform.messaging import take_key_locks
from libs.platform.timer_worker import PgTimers
from services.allocation.app.ports import (
    Allocation,
    AllocationChange,
    AllocationConflict,
    NewAllocation,
    OversellRefused,
    PaymentRecord,
    Release,
    Waiting,
)
from services.allocation.domain.allocations import (
    AllocationStatus,
    Lines,
    Reservation,
    ReservationStatus,
    ReservedLine,
)
from services.allocation.domain.payments import PaymentState
from services.allocation.domain.sourcing import Location
from services.allocation.domain.stock import Adjustment, StockLevel


def _lines(raw: str | None) -> Lines | None:
    return tuple((str(sku), int(q)) for sku, q in orjson.loads(raw)) if raw else None


def _lines_json(lines: Lines | None) -> str | None:
    return orjson.dumps(lines).decode() if lines else None


def _reserved_line(row: asyncpg.Record) -> ReservedLine:
    return ReservedLine(
        row["shipment_id"], row["location_id"], row["sku"], row["quantity"], ReservationStatus(row["status"])
    )


class PgLocations:
    """Implements ``Locations``."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def upsert(self, location: Location, name: str) -> None:
        await self._conn.execute(
            "INSERT INTO locations (location_id, name, kind, lat, lon, countries, cost_per_shipment, active)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (location_id) DO UPDATE SET"
            " name = $2, kind = $3, lat = $4, lon = $5, countries = $6, cost_per_shipment = $7, active = $8,"
            " updated_at = now()",
            location.location_id,
            name,
            location.kind,
            location.lat,
            location.lon,
            sorted(location.countries),
            location.cost_per_shipment,
            location.active,
        )

    async def active(self) -> list[Location]:
        rows = await self._conn.fetch(
            "SELECT location_id, kind, countries, cost_per_shipment, lat, lon FROM locations WHERE active"
        )
        return [
            Location(
                r["location_id"],
                r["kind"],
                frozenset(r["countries"]),
                r["cost_per_shipment"],
                r["lat"],
                r["lon"],
                True,
            )
            for r in rows
        ]


_RESERVE = """
WITH wanted AS (
    SELECT sku, location_id, sum(quantity)::int AS quantity
    FROM unnest($3::text[], $4::text[], $5::int[]) AS w(location_id, sku, quantity)
    GROUP BY sku, location_id
), taken AS (
    UPDATE stock s SET reserved = s.reserved + w.quantity
    FROM wanted w
    WHERE s.sku = w.sku AND s.location_id = w.location_id AND s.on_hand - s.reserved >= w.quantity
    RETURNING s.sku
), written AS (
    INSERT INTO reservations (shipment_id, order_id, location_id, sku, quantity)
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::int[])
)
SELECT (SELECT count(*) FROM wanted) AS wanted, (SELECT count(*) FROM taken) AS taken
"""

_SETTLE = """
WITH settled AS (
    UPDATE reservations SET status = $2 WHERE shipment_id = $1 AND status = 'reserved'
    RETURNING shipment_id, location_id, sku, quantity, status
), moved AS (
    UPDATE stock s SET on_hand = s.on_hand - m.quantity, reserved = s.reserved - m.quantity,
        {column} = s.{column} + m.quantity
    FROM (SELECT sku, location_id, sum(quantity)::int AS quantity FROM settled GROUP BY sku, location_id) m
    WHERE s.sku = m.sku AND s.location_id = m.location_id
)
SELECT * FROM settled ORDER BY sku
"""
_SETTLE_AS = {
    ReservationStatus.SHIPPED: _SETTLE.format(column="shipped"),
    ReservationStatus.FAILED: _SETTLE.format(column="written_off"),
}

_LOSE = """
WITH lost AS (
    UPDATE reservations SET status = 'lost' WHERE shipment_id = $1 AND status = 'shipped'
    RETURNING shipment_id, location_id, sku, quantity, status
), moved AS (
    UPDATE stock s SET shipped = s.shipped - m.quantity, written_off = s.written_off + m.quantity
    FROM (SELECT sku, location_id, sum(quantity)::int AS quantity FROM lost GROUP BY sku, location_id) m
    WHERE s.sku = m.sku AND s.location_id = m.location_id
)
SELECT * FROM lost ORDER BY sku
"""

_RELEASE = """
WITH wanted AS (
    SELECT shipment_id, sku, sum(quantity)::int AS quantity
    FROM unnest($1::text[], $2::text[], $3::int[]) AS w(shipment_id, sku, quantity)
    GROUP BY shipment_id, sku
), released AS (
    UPDATE reservations r SET
        quantity = CASE WHEN r.quantity > w.quantity THEN r.quantity - w.quantity ELSE r.quantity END,
        status = CASE WHEN r.quantity > w.quantity THEN r.status ELSE 'released' END
    FROM wanted w
    WHERE r.shipment_id = w.shipment_id AND r.sku = w.sku AND r.status = 'reserved'
    RETURNING r.location_id, r.sku, CASE WHEN r.status = 'released' THEN r.quantity ELSE w.quantity END AS units
)
UPDATE stock s SET reserved = s.reserved - f.units
FROM (SELECT sku, location_id, sum(units)::int AS units FROM released GROUP BY sku, location_id) f
WHERE s.sku = f.sku AND s.location_id = f.location_id
"""


class PgStockLedger:
    """Implements ``StockLedger``."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def serialise(self, skus: Sequence[str]) -> None:
        """Row locks cannot cover stock that does not exist yet: an order finding no row for a sku
        would backorder while the first adjustment for that sku inserts the row and looks for
        backorders in a concurrent transaction; neither would see the other and the order would
        wait for the next delivery. Every path takes these locks first (a new statement, so what it
        reads next includes the commit of the transaction it waited for)."""
        if skus:
            await take_key_locks(self._conn, skus)

    async def lock(self, skus: Sequence[str]) -> list[StockLevel]:
        if not skus:
            return []
        await self.serialise(skus)
        rows = await self._conn.fetch(
            "SELECT sku, location_id, on_hand, reserved FROM stock WHERE sku = ANY($1::text[])"
            " ORDER BY sku, location_id FOR UPDATE",
            list(skus),
        )
        return [StockLevel(r["sku"], r["location_id"], r["on_hand"], r["reserved"]) for r in rows]

    async def lock_level(self, sku: str, location_id: str) -> StockLevel:
        await self.serialise([sku])
        await self._conn.execute(
            "INSERT INTO stock (sku, location_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", sku, location_id
        )
        row = await self._conn.fetchrow(
            "SELECT on_hand, reserved FROM stock WHERE sku = $1 AND location_id = $2 FOR UPDATE",
            sku,
            location_id,
        )
        return StockLevel(sku, location_id, row["on_hand"], row["reserved"])

    async def wanted_at(self, location_id: str) -> list[str]:
        rows = await self._conn.fetch(
            "SELECT s.sku FROM stock s WHERE s.location_id = $1 AND s.on_hand > s.reserved"
            " AND EXISTS (SELECT 1 FROM allocations a WHERE a.status = 'backordered' AND a.skus @> ARRAY[s.sku])"
            " ORDER BY s.sku",
            location_id,
        )
        return [r["sku"] for r in rows]

    async def adjustment_applied(self, adjustment_id: str) -> bool:
        return bool(
            await self._conn.fetchval("SELECT true FROM adjustments WHERE adjustment_id = $1", adjustment_id)
        )

    async def apply(self, adjustment: Adjustment) -> None:
        await self._conn.execute(
            "WITH recorded AS ("
            " INSERT INTO adjustments (adjustment_id, sku, location_id, delta, on_hand_after, reason)"
            " VALUES ($1, $2, $3, $4, $5, $6))"
            " UPDATE stock SET on_hand = $5 WHERE sku = $2 AND location_id = $3",
            adjustment.adjustment_id,
            adjustment.sku,
            adjustment.location_id,
            adjustment.delta,
            adjustment.on_hand_after,
            adjustment.reason,
        )

    async def reserve(self, reservations: Sequence[Reservation]) -> None:
        """One statement for every reservation of a transaction: each stock row is raised once by the
        units all its reservations take, only where that many are free; if any row was not (a
        bug), nothing is kept."""
        if not reservations:
            return
        row = await self._conn.fetchrow(
            _RESERVE,
            [r.shipment_id for r in reservations],
            [r.order_id for r in reservations],
            [r.location_id for r in reservations],
            [r.sku for r in reservations],
            [r.quantity for r in reservations],
        )
        if row["taken"] != row["wanted"]:
            raise OversellRefused(
                f"{row['wanted'] - row['taken']} of {row['wanted']} stock rows had fewer units free than planned"
            )

    async def settle(self, shipment_id: str, outcome: ReservationStatus) -> list[ReservedLine]:
        rows = await self._conn.fetch(_SETTLE_AS[outcome], shipment_id, outcome.value)
        return [_reserved_line(r) for r in rows]

    async def lose(self, shipment_id: str) -> list[ReservedLine]:
        return [_reserved_line(r) for r in await self._conn.fetch(_LOSE, shipment_id)]

    async def release(self, lines: Sequence[Release]) -> None:
        if not lines:
            return
        await self._conn.execute(
            _RELEASE,
            [line.shipment_id for line in lines],
            [line.sku for line in lines],
            [line.quantity for line in lines],
        )


_ADD = """
INSERT INTO allocations (order_id, status, order_details, skus, generation, backordered_at, queue_position,
    pending_lines)
SELECT o, s, d::jsonb, ARRAY(SELECT jsonb_array_elements_text(k::jsonb)), g,
    CASE WHEN s = 'backordered' THEN now() END,
    CASE WHEN s = 'backordered' THEN nextval('backorder_queue') END,
    p::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[])
    WITH ORDINALITY AS a(o, s, d, k, g, p, n)
ORDER BY n
ON CONFLICT (order_id) DO NOTHING
RETURNING order_id
"""

_UPDATE = """
UPDATE allocations a SET status = c.s, generation = c.g, pending_lines = c.p::jsonb, updated_at = now(),
    backordered_at = CASE WHEN c.s = 'backordered' AND a.status <> 'backordered' THEN now()
        ELSE a.backordered_at END,
    queue_position = CASE WHEN c.s = 'backordered' AND a.status <> 'backordered'
        THEN nextval('backorder_queue') ELSE a.queue_position END
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[]) AS c(o, s, g, p)
WHERE a.order_id = c.o
"""


class PgAllocations:
    """Implements ``Allocations``."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def known(self, order_ids: Sequence[UUID]) -> set[UUID]:
        rows = await self._conn.fetch(
            "SELECT order_id FROM allocations WHERE order_id = ANY($1::uuid[])", list(order_ids)
        )
        return {r["order_id"] for r in rows}

    async def add(self, allocations: Sequence[NewAllocation]) -> None:
        if not allocations:
            return
        inserted = await self._conn.fetch(
            _ADD,
            [a.order_id for a in allocations],
            [a.status.value for a in allocations],
            [a.order.model_dump_json() for a in allocations],
            [orjson.dumps(sorted({line.sku for line in a.order.lines})).decode() for a in allocations],
            [a.generation for a in allocations],
            [_lines_json(a.pending) for a in allocations],
        )
        if len(inserted) != len(allocations):
            taken = {a.order_id for a in allocations} - {r["order_id"] for r in inserted}
            raise AllocationConflict(f"allocated meanwhile: {sorted(map(str, taken))}")

    async def lock(self, order_id: UUID) -> Allocation | None:
        row = await self._conn.fetchrow(
            "SELECT status, generation, order_details::text AS order_details, pending_lines::text AS pending"
            " FROM allocations WHERE order_id = $1 FOR UPDATE",
            order_id,
        )
        if row is None:
            return None
        status = AllocationStatus(row["status"])
        order = (
            None
            if status is AllocationStatus.CANCELLED
            else OrderDetails.model_validate_json(row["order_details"])
        )
        return Allocation(order_id, status, row["generation"], _lines(row["pending"]), order)

    async def tombstone(self, order_id: UUID) -> None:
        await self._conn.execute(
            "INSERT INTO allocations (order_id, status, order_details, skus)"
            " VALUES ($1, 'cancelled', '{}', '{}')"
            " ON CONFLICT (order_id) DO UPDATE SET status = 'cancelled', updated_at = now()",
            order_id,
        )

    async def update(self, changes: Sequence[AllocationChange]) -> None:
        if not changes:
            return
        await self._conn.execute(
            _UPDATE,
            [c.order_id for c in changes],
            [c.status.value for c in changes],
            [c.generation for c in changes],
            [_lines_json(c.pending) for c in changes],
        )

    async def replace_order(self, order_id: UUID, order: OrderDetails) -> None:
        await self._conn.execute(
            "UPDATE allocations SET order_details = $2::jsonb WHERE order_id = $1",
            order_id,
            order.model_dump_json(),
        )

    async def reservations(self, order_ids: Sequence[UUID]) -> dict[UUID, list[ReservedLine]]:
        rows = await self._conn.fetch(
            "SELECT order_id, shipment_id, location_id, sku, quantity, status FROM reservations"
            " WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, shipment_id, sku",
            list(order_ids),
        )
        by_order: dict[UUID, list[ReservedLine]] = {}
        for r in rows:
            by_order.setdefault(r["order_id"], []).append(_reserved_line(r))
        return by_order

    async def lock_waiting(self, skus: Sequence[str]) -> list[Waiting]:
        rows = await self._conn.fetch(
            "SELECT order_id, order_details::text AS order_details, generation, pending_lines::text AS pending"
            " FROM allocations WHERE status = 'backordered' AND skus && $1::text[]"
            " ORDER BY queue_position, order_id FOR UPDATE SKIP LOCKED",
            list(skus),
        )
        return [
            Waiting(
                r["order_id"],
                OrderDetails.model_validate_json(r["order_details"]),
                r["generation"],
                _lines(r["pending"]),
            )
            for r in rows
        ]

    async def erase(self, request: ErasureRequested) -> int:
        status = await self._conn.execute(
            f"UPDATE allocations SET order_details = {erased_json('order_details', '$4')}, updated_at = now()"
            f" WHERE {covered('order_details', _ORDER_CHANNEL, '$1', '$2', '$3')}",
            request.customer_id,
            request.channel,
            request.requested_at,
            ERASED_PATCH,
        )
        return int(status.split()[-1])


_ORDER_CHANNEL = "order_details ->> 'channel'"


class PgPayments:
    """Implements ``Payments``."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def of(self, order_ids: Sequence[UUID]) -> dict[UUID, PaymentRecord]:
        if not order_ids:
            return {}
        rows = await self._conn.fetch(
            "SELECT order_id, state, due_at FROM payments WHERE order_id = ANY($1::uuid[])", list(order_ids)
        )
        return {r["order_id"]: PaymentRecord(PaymentState(r["state"]), r["due_at"]) for r in rows}

    async def set(self, order_id: UUID, record: PaymentRecord) -> None:
        await self._conn.execute(
            "INSERT INTO payments (order_id, state, due_at) VALUES ($1, $2, $3) ON CONFLICT (order_id)"
            " DO UPDATE SET state = EXCLUDED.state, due_at = EXCLUDED.due_at, updated_at = now()",
            order_id,
            record.state.value,
            record.due_at,
        )


class PgFallbacks:
    """Implements ``Fallbacks``."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def of(self, order_ids: Sequence[UUID]) -> dict[UUID, int]:
        if not order_ids:
            return {}
        rows = await self._conn.fetch(
            "SELECT order_id, tier FROM fallbacks WHERE order_id = ANY($1::uuid[])", list(order_ids)
        )
        return {r["order_id"]: r["tier"] for r in rows}

    async def reach(self, order_id: UUID, tier: int) -> None:
        await self._conn.execute(
            "INSERT INTO fallbacks (order_id, tier) VALUES ($1, $2) ON CONFLICT (order_id)"
            " DO UPDATE SET tier = GREATEST(fallbacks.tier, EXCLUDED.tier), reached_at = now()",
            order_id,
            tier,
        )


class PgAllocationUnit:
    """One transaction's view of allocation's storage, on the connection the router gives it."""

    __slots__ = ("_allocations", "_erasures", "_fallbacks", "_locations", "_payments", "_stock", "_timers")

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._locations = PgLocations(conn)
        self._stock = PgStockLedger(conn)
        self._allocations = PgAllocations(conn)
        self._payments = PgPayments(conn)
        self._timers = PgTimers(conn)
        self._fallbacks = PgFallbacks(conn)
        self._erasures = PgErasureLedger(conn)

    @property
    def locations(self) -> PgLocations:
        return self._locations

    @property
    def stock(self) -> PgStockLedger:
        return self._stock

    @property
    def allocations(self) -> PgAllocations:
        return self._allocations

    @property
    def payments(self) -> PgPayments:
        return self._payments

    @property
    def timers(self) -> PgTimers:
        return self._timers

    @property
    def fallbacks(self) -> PgFallbacks:
        return self._fallbacks

    @property
    def erasures(self) -> PgErasureLedger:
        return self._erasures
