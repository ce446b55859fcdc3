"""Intake's own PostgreSQL store: its orders, their status timelines, and the cancel requests acted on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from libs.contracts.orders import OrderDetails, OrderStatusChanged
from libs.contracts.privacy import ErasureRequested
from libs.contracts.vocabulary import OrderStatus
from libs.platform.erasure_store import ERASED_PATCH, PgErasureLedger, covered, erased_json
from libs.platform.erasures import Erased
from services.intake.app.ports import NewOrder
from services.intake.domain.orders import Order

_ORDER = "SELECT order_id, channel, external_id, status, version, created_at FROM orders"

_ADD = """
WITH incoming AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                         $7::text[], $8::text[], $9::timestamptz[])
        AS i(order_id, channel, external_id, fingerprint, status, version, details, event, occurred_at)
), added AS (
    INSERT INTO orders (order_id, channel, external_id, fingerprint, status, version, details)
    SELECT order_id, channel, external_id, fingerprint, status, version, details::jsonb
    FROM incoming ORDER BY order_id
    ON CONFLICT DO NOTHING
    RETURNING order_id
), timeline AS (
    INSERT INTO status_history (order_id, version, status, event, occurred_at)
    SELECT order_id, version, status, event::jsonb, occurred_at FROM incoming JOIN added USING (order_id)
)
SELECT i.order_id, o.fingerprint FROM incoming i LEFT JOIN orders o USING (order_id)
WHERE NOT EXISTS (SELECT FROM added a WHERE a.order_id = i.order_id)
"""
"""New orders and their first timeline entries in one statement, in order-id order (two processes
inserting the same orders wait for each other in one order: no deadlock). What it did not insert
comes back with the fingerprint on file as of the statement's start."""

_RECORD_STATUSES = """
WITH new AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::timestamptz[])
        AS n(order_id, version, status, event, occurred_at)
), history AS (
    INSERT INTO status_history (order_id, version, status, event, occurred_at)
    SELECT order_id, version, status, event::jsonb, occurred_at FROM new
)
UPDATE orders o SET status = latest.status, version = latest.version, updated_at = now()
FROM (SELECT DISTINCT ON (order_id) order_id, version, status FROM new ORDER BY order_id, version DESC) AS latest
WHERE o.order_id = latest.order_id
"""


def _order(row: Mapping[str, Any]) -> Order:
    return Order(
        order_id=row["order_id"],
        channel=row["channel"],
        external_id=row["external_id"],
        status=OrderStatus(row["status"]),
        version=row["version"],
        received_at=row["created_at"],
    )


class PgOrderBook:
    """Implements ``OrderBook`` on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, orders: Sequence[NewOrder]) -> dict[UUID, str]:
        rows = await self._conn.fetch(
            _ADD,
            [o.order_id for o in orders],
            [o.details.channel for o in orders],
            [o.details.external_id for o in orders],
            [o.fingerprint for o in orders],
            [o.received.status.value for o in orders],
            [o.received.version for o in orders],
            [o.details.model_dump_json() for o in orders],
            [o.received.model_dump_json() for o in orders],
            [o.received.occurred_at for o in orders],
        )
        on_file = {r["order_id"]: r["fingerprint"] for r in rows}
        if raced := [order_id for order_id, digest in on_file.items() if digest is None]:
            # Inserted by a concurrent transaction that committed while this statement waited for it
            # (so its snapshot could not see the row): read it again, now committed.
            again = await self._conn.fetch(
                "SELECT order_id, fingerprint FROM orders WHERE order_id = ANY($1::uuid[])", raced
            )
            on_file.update({r["order_id"]: r["fingerprint"] for r in again})
            if vanished := [str(order_id) for order_id in raced if on_file[order_id] is None]:
                raise RuntimeError(f"orders neither inserted nor on file: {', '.join(vanished)}")
        return on_file

    async def lock(self, order_ids: Sequence[UUID]) -> dict[UUID, Order]:
        rows = await self._conn.fetch(
            f"{_ORDER} WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE", list(order_ids)
        )
        return {r["order_id"]: _order(r) for r in rows}

    async def record_statuses(self, changes: Sequence[OrderStatusChanged]) -> None:
        """Every new version's timeline entry, and each order's latest status, in one statement."""
        await self._conn.execute(
            _RECORD_STATUSES,
            [c.order_id for c in changes],
            [c.version for c in changes],
            [c.status.value for c in changes],
            [c.model_dump_json() for c in changes],
            [c.occurred_at for c in changes],
        )

    async def find(self, order_id: UUID) -> Order | None:
        row = await self._conn.fetchrow(f"{_ORDER} WHERE order_id = $1", order_id)
        return _order(row) if row else None

    async def find_by_channel(self, channel: str, external_id: str) -> Order | None:
        row = await self._conn.fetchrow(
            f"{_ORDER} WHERE channel = $1 AND external_id = $2", channel, external_id
        )
        return _order(row) if row else None

    async def current_details(self, order_id: UUID) -> OrderDetails:
        raw = await self._conn.fetchval("SELECT details::text FROM orders WHERE order_id = $1", order_id)
        return OrderDetails.model_validate_json(raw)

    async def replace_details(self, order_id: UUID, details: OrderDetails) -> None:
        await self._conn.execute(
            "UPDATE orders SET details = $2::jsonb, updated_at = now() WHERE order_id = $1",
            order_id,
            details.model_dump_json(),
        )

    async def erase(self, request: ErasureRequested) -> Erased:
        erased = await self._conn.fetchval(
            f"WITH erased AS (UPDATE orders SET details = {erased_json('details', '$4')}, updated_at = now()"
            f" WHERE {covered('details', 'channel', '$1', '$2', '$3')} RETURNING 1)"
            " SELECT count(*) FROM erased",
            request.customer_id,
            request.channel,
            request.requested_at,
            ERASED_PATCH,
        )
        return Erased(erased, erased)


class PgCancelRequests:
    """Implements ``CancelRequests`` on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def claim(self, request_id: str, order_id: UUID) -> bool:
        return bool(
            await self._conn.fetchval(
                "INSERT INTO cancel_requests (request_id, order_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                request_id,
                order_id,
            )
        )


class PgPaymentEvents:
    """Implements ``PaymentEvents`` on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def first_time(self, payment_event_id: str, order_id: UUID) -> bool:
        return bool(
            await self._conn.fetchval(
                "INSERT INTO payment_events (payment_event_id, order_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                payment_event_id,
                order_id,
            )
        )


class PgEditRequests:
    """Implements ``EditRequests`` on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def claim(self, request_id: str, order_id: UUID) -> bool:
        return bool(
            await self._conn.fetchval(
                "INSERT INTO edit_requests (request_id, order_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                request_id,
                order_id,
            )
        )


class PgIntakeUnit:
    """Intake's ports on the connection of one transaction (the router builds one per transaction)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.orders = PgOrderBook(conn)
        self.cancel_requests = PgCancelRequests(conn)
        self.payment_events = PgPaymentEvents(conn)
        self.edit_requests = PgEditRequests(conn)
        self.erasures = PgErasureLedger(conn)
