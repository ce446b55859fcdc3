"""PostgreSQL storage of intake's orders and their status timelines."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class StoredOrder:
    order_id: UUID
    channel: str
    external_id: str
    fingerprint: str
    status: str
    version: int
    received_at: datetime | None = None


@dataclass(frozen=True)
class StatusRow:
    """One new version of an order: its timeline entry, and (the latest per order) its status."""

    order_id: UUID
    version: int
    status: str
    event_json: str
    occurred_at: datetime


class PgOrderBook:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def find_by_channel(self, channel: str, external_id: str) -> StoredOrder | None:
        row = await self._conn.fetchrow(
            "SELECT order_id, channel, external_id, fingerprint, status, version FROM orders"
            " WHERE channel = $1 AND external_id = $2",
            channel,
            external_id,
        )
        return StoredOrder(**dict(row)) if row else None

    async def lock(self, order_id: UUID) -> StoredOrder | None:
        row = await self._conn.fetchrow(
            "SELECT order_id, channel, external_id, fingerprint, status, version,"
            " created_at AS received_at FROM orders WHERE order_id = $1 FOR UPDATE",
            order_id,
        )
        return StoredOrder(**dict(row)) if row else None

    async def lock_many(self, order_ids: list[UUID]) -> dict[UUID, StoredOrder]:
        rows = await self._conn.fetch(
            "SELECT order_id, channel, external_id, fingerprint, status, version,"
            " created_at AS received_at FROM orders WHERE order_id = ANY($1::uuid[])"
            " ORDER BY order_id FOR UPDATE",
            order_ids,
        )
        return {r["order_id"]: StoredOrder(**dict(r)) for r in rows}

    async def record_statuses(self, rows: list[StatusRow]) -> None:
        """Every new version's timeline entry, and each order's latest status, in one statement."""
        await self._conn.execute(
            "WITH new AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[],"
            " $5::timestamptz[]) AS n(order_id, version, status, event, occurred_at)),"
            " history AS (INSERT INTO status_history (order_id, version, status, event, occurred_at)"
            " SELECT order_id, version, status, event::jsonb, occurred_at FROM new)"
            " UPDATE orders o SET status = latest.status, version = latest.version, updated_at = now()"
            " FROM (SELECT DISTINCT ON (order_id) order_id, version, status FROM new"
            " ORDER BY order_id, version DESC) AS latest WHERE o.order_id = latest.order_id",
            [r.order_id for r in rows],
            [r.version for r in rows],
            [r.status for r in rows],
            [r.event_json for r in rows],
            [r.occurred_at for r in rows],
        )

    async def insert(self, order: StoredOrder, details_json: str) -> bool:
        """False when the channel order is already recorded (a concurrent duplicate)."""
        inserted = await self._conn.fetchval(
            "INSERT INTO orders (order_id, channel, external_id, fingerprint, status, version, details)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT DO NOTHING RETURNING true",
            order.order_id,
            order.channel,
            order.external_id,
            order.fingerprint,
            order.status,
            order.version,
            details_json,
        )
        return bool(inserted)

    async def record_status(
        self, order_id: UUID, version: int, status: str, event_json: str, occurred_at: datetime
    ) -> None:
        """The order's current status and its timeline entry, in one statement."""
        await self._conn.execute(
            "WITH moved AS (UPDATE orders SET status = $3, version = $2, updated_at = now() WHERE order_id = $1)"
            " INSERT INTO status_history (order_id, version, status, event, occurred_at)"
            " VALUES ($1, $2, $3, $4::jsonb, $5)",
            order_id,
            version,
            status,
            event_json,
            occurred_at,
        )

    async def record_cancel_request(self, request_id: str, order_id: UUID | None) -> bool:
        """False when this request id was seen before."""
        return bool(
            await self._conn.fetchval(
                "INSERT INTO cancel_requests (request_id, order_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
                request_id,
                order_id,
            )
        )

    async def find_by_id(self, order_id: UUID) -> StoredOrder | None:
        row = await self._conn.fetchrow(
            "SELECT order_id, channel, external_id, fingerprint, status, version FROM orders WHERE order_id = $1",
            order_id,
        )
        return StoredOrder(**dict(row)) if row else None
