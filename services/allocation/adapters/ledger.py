"""PostgreSQL side of allocation: locations, stock, adjustments, allocations and reservations.

Stock rows are locked (``FOR UPDATE``, in sku/location order so concurrent transactions never
deadlock on each other's rows) before planning, and every reservation is a conditional update:
two allocation processes can never reserve the same unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from libs.platform.messaging import take_key_locks
from services.allocation.domain.sourcing import Location, PlannedShipment


class OversellRefused(Exception):
    """A reservation found less stock than planned: a bug, never a customer-visible state."""


@dataclass(frozen=True)
class StockRow:
    sku: str
    location_id: str
    on_hand: int
    reserved: int


@dataclass(frozen=True)
class WaitingOrder:
    order_id: UUID
    order_details: str
    generation: int


class PgStockLedger:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def upsert_location(self, loc: Location, name: str) -> None:
        await self._conn.execute(
            "INSERT INTO locations (location_id, name, kind, lat, lon, countries, cost_per_shipment, active)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (location_id) DO UPDATE SET"
            " name = $2, kind = $3, lat = $4, lon = $5, countries = $6, cost_per_shipment = $7, active = $8,"
            " updated_at = now()",
            loc.location_id,
            name,
            loc.kind,
            loc.lat,
            loc.lon,
            sorted(loc.countries),
            loc.cost_per_shipment,
            loc.active,
        )

    async def locations(self) -> list[Location]:
        rows = await self._conn.fetch(
            "SELECT location_id, kind, countries, cost_per_shipment, lat, lon, active FROM locations"
        )
        return [
            Location(
                r["location_id"],
                r["kind"],
                frozenset(r["countries"]),
                r["cost_per_shipment"],
                r["lat"],
                r["lon"],
                r["active"],
            )
            for r in rows
        ]

    async def _serialise_skus(self, skus: list[str]) -> None:
        """Per-sku transaction locks, taken in sku order before any stock row.

        Row locks cannot cover stock that does not exist yet: an order finding no row for a sku
        would backorder while the first adjustment for that sku inserts the row and looks for
        backorders in a concurrent transaction — neither sees the other and the order waits for
        the next delivery. Both paths take these locks first, so one always sees the other's commit.
        """
        await take_key_locks(self._conn, skus)

    async def lock_skus(self, skus: list[str]) -> None:
        """Serialise with every other transaction on these skus (taken before any stock row)."""
        await self._serialise_skus(skus)

    async def skus_in_stock_at(self, location_id: str) -> list[str]:
        """Skus with units free at the location, in sku order."""
        rows = await self._conn.fetch(
            "SELECT sku FROM stock WHERE location_id = $1 AND on_hand > reserved ORDER BY sku", location_id
        )
        return [r["sku"] for r in rows]

    async def lock_stock(self, skus: list[str]) -> list[StockRow]:
        await self._serialise_skus(skus)
        rows = await self._conn.fetch(
            "SELECT sku, location_id, on_hand, reserved FROM stock WHERE sku = ANY($1::text[])"
            " ORDER BY sku, location_id FOR UPDATE",
            skus,
        )
        return [StockRow(**dict(r)) for r in rows]

    async def lock_stock_row(self, sku: str, location_id: str) -> StockRow:
        await self._serialise_skus([sku])
        await self._conn.execute(
            "INSERT INTO stock (sku, location_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", sku, location_id
        )
        row = await self._conn.fetchrow(
            "SELECT sku, location_id, on_hand, reserved FROM stock WHERE sku = $1 AND location_id = $2 FOR UPDATE",
            sku,
            location_id,
        )
        return StockRow(**dict(row))

    async def record_adjustment(
        self, adjustment_id: str, sku: str, location_id: str, delta: int, on_hand_after: int, reason: str
    ) -> bool:
        """False if this adjustment was applied before."""
        inserted = await self._conn.fetchval(
            "INSERT INTO adjustments (adjustment_id, sku, location_id, delta, on_hand_after, reason)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true",
            adjustment_id,
            sku,
            location_id,
            delta,
            on_hand_after,
            reason,
        )
        return bool(inserted)

    async def adjustment_applied(self, adjustment_id: str) -> bool:
        return bool(
            await self._conn.fetchval("SELECT true FROM adjustments WHERE adjustment_id = $1", adjustment_id)
        )

    async def set_on_hand(self, sku: str, location_id: str, on_hand: int) -> None:
        await self._conn.execute(
            "UPDATE stock SET on_hand = $3 WHERE sku = $1 AND location_id = $2", sku, location_id, on_hand
        )

    async def reserve(self, order_id: UUID, shipments: list[tuple[str, PlannedShipment]]) -> None:
        for shipment_id, shipment in shipments:
            for sku, quantity in shipment.lines:
                updated = await self._conn.fetchval(
                    "UPDATE stock SET reserved = reserved + $3 WHERE sku = $1 AND location_id = $2"
                    " AND on_hand - reserved >= $3 RETURNING true",
                    sku,
                    shipment.location_id,
                    quantity,
                )
                if not updated:
                    raise OversellRefused(f"{sku}@{shipment.location_id}: fewer than {quantity} free")
                await self._conn.execute(
                    "INSERT INTO reservations (shipment_id, order_id, location_id, sku, quantity)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    shipment_id,
                    order_id,
                    shipment.location_id,
                    sku,
                    quantity,
                )

    async def allocation_exists(self, order_id: UUID) -> bool:
        return bool(await self._conn.fetchval("SELECT true FROM allocations WHERE order_id = $1", order_id))

    async def save_allocation(
        self, order_id: UUID, status: str, details_json: str, skus: list[str], generation: int
    ) -> None:
        await self._conn.execute(
            "INSERT INTO allocations (order_id, status, order_details, skus, generation, backordered_at)"
            " VALUES ($1, $2, $3::jsonb, $4, $5, CASE WHEN $2 = 'backordered' THEN now() END)"
            " ON CONFLICT (order_id) DO UPDATE SET status = $2, generation = $5, updated_at = now()",
            order_id,
            status,
            details_json,
            skus,
            generation,
        )

    async def lock_waiting(self, skus: list[str]) -> list[WaitingOrder]:
        """Backorders that need any of ``skus``, oldest first; rows another process holds are skipped."""
        rows = await self._conn.fetch(
            "SELECT order_id, order_details::text AS order_details, generation FROM allocations"
            " WHERE status = 'backordered' AND skus && $1::text[]"
            " ORDER BY backordered_at, order_id FOR UPDATE SKIP LOCKED",
            skus,
        )
        return [WaitingOrder(**dict(r)) for r in rows]


@dataclass(frozen=True)
class AllocationState:
    status: str
    order_details: str
    generation: int
    pending_lines: str | None


@dataclass(frozen=True)
class ReservedLine:
    shipment_id: str
    location_id: str
    sku: str
    quantity: int
    status: str


class PgOrderReservations(PgStockLedger):
    """The order-level half of the ledger: an order's allocation state and its reservations."""

    async def lock_allocation(self, order_id: UUID) -> AllocationState | None:
        row = await self._conn.fetchrow(
            "SELECT status, order_details::text AS order_details, generation, pending_lines::text AS pending_lines"
            " FROM allocations WHERE order_id = $1 FOR UPDATE",
            order_id,
        )
        return AllocationState(**dict(row)) if row else None

    async def tombstone(self, order_id: UUID) -> None:
        """A cancelled order allocation never saw: a late `validated` must not allocate it."""
        await self._conn.execute(
            "INSERT INTO allocations (order_id, status, order_details, skus) VALUES ($1, 'cancelled', '{}', '{}')"
            " ON CONFLICT (order_id) DO UPDATE SET status = 'cancelled', updated_at = now()",
            order_id,
        )

    async def set_status(
        self, order_id: UUID, status: str, generation: int, pending_lines: str | None
    ) -> None:
        await self._conn.execute(
            "UPDATE allocations SET status = $2, generation = $3, pending_lines = $4::jsonb, updated_at = now(),"
            " backordered_at = CASE WHEN $2 = 'backordered' THEN now() ELSE backordered_at END WHERE order_id = $1",
            order_id,
            status,
            generation,
            pending_lines,
        )

    async def reservations(self, order_id: UUID) -> list[ReservedLine]:
        rows = await self._conn.fetch(
            "SELECT shipment_id, location_id, sku, quantity, status FROM reservations WHERE order_id = $1"
            " ORDER BY shipment_id, sku",
            order_id,
        )
        return [ReservedLine(**dict(r)) for r in rows]

    async def settle(self, shipment_id: str, outcome: str) -> list[ReservedLine]:
        """The units reserved for a shipment leave the stock: `shipped`, or written off as `failed`."""
        column = {"shipped": "shipped", "failed": "written_off"}[outcome]
        rows = await self._conn.fetch(
            "UPDATE reservations SET status = $2 WHERE shipment_id = $1 AND status = 'reserved'"
            " RETURNING shipment_id, location_id, sku, quantity, status",
            shipment_id,
            outcome,
        )
        for r in sorted(rows, key=lambda r: (r["sku"], r["location_id"])):
            await self._conn.execute(
                f"UPDATE stock SET on_hand = on_hand - $3, reserved = reserved - $3, {column} = {column} + $3"
                " WHERE sku = $1 AND location_id = $2",
                r["sku"],
                r["location_id"],
                r["quantity"],
            )
        return [ReservedLine(**dict(r)) for r in rows]

    async def release(self, shipment_id: str, sku: str, quantity: int) -> int:
        """Give back up to ``quantity`` reserved units of a shipment line; returns how many were released."""
        row = await self._conn.fetchrow(
            "SELECT location_id, quantity FROM reservations WHERE shipment_id = $1 AND sku = $2 AND status = 'reserved'"
            " FOR UPDATE",
            shipment_id,
            sku,
        )
        if row is None:
            return 0
        units: int = min(quantity, row["quantity"])
        left = row["quantity"] - units
        await self._conn.execute(
            "UPDATE reservations SET quantity = CASE WHEN $3 > 0 THEN $3 ELSE quantity END,"
            " status = CASE WHEN $3 > 0 THEN status ELSE 'released' END WHERE shipment_id = $1 AND sku = $2",
            shipment_id,
            sku,
            left,
        )
        await self._conn.execute(
            "UPDATE stock SET reserved = reserved - $3 WHERE sku = $1 AND location_id = $2",
            sku,
            row["location_id"],
            units,
        )
        return units
