"""The erasure ledger on PostgreSQL (the ``erasures`` table of a service's schema), and the SQL that
erases an ``OrderDetails`` stored as JSON in place, from the one patch in ``libs/contracts/privacy.py``."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from libs.contracts.privacy import ERASED_FIELDS, Erasure, customer_digest
from libs.platform.erasures import Erased

ERASED_PATCH = orjson.dumps(ERASED_FIELDS).decode()
"""The merge patch as a query parameter (``$n::jsonb``)."""


def erased_json(column: str, patch: str) -> str:
    """SQL: ``column`` (an ``OrderDetails``, jsonb) with each group of the patch ``patch`` merged in."""
    expression = column
    for group in ERASED_FIELDS:
        expression = f"jsonb_set({expression}, '{{{group}}}', ({column} -> '{group}') || ({patch}::jsonb -> '{group}'))"
    return expression


def covered(column: str, channel_column: str, customer: str, channel: str, requested_at: str) -> str:
    """SQL: the ``OrderDetails`` in ``column`` is the customer's (on that channel, when not NULL),
    placed before ``requested_at`` — ``covers`` in ``libs/contracts/privacy.py``, for stored rows."""
    return (
        f"{column} -> 'customer' ->> 'id' = {customer}"
        f" AND ({channel}::text IS NULL OR {channel_column} = {channel})"
        f" AND ({column} ->> 'placed_at')::timestamptz < {requested_at}"
    )


class PgErasureLedger:
    """Implements ``ErasureLedger`` on one connection: the schema's ``erasures`` table, through the
    two functions (``000_platform_privacy_erasures.sql``) that hold the advisory lock an erasure
    and the transactions storing orders exclude each other with."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def claim(self, erasure: Erasure) -> bool:
        return bool(
            await self._conn.fetchval(
                "SELECT erasure_claim($1, $2, $3, $4)",
                erasure.request_id,
                erasure.channel,
                erasure.customer_digest,
                erasure.requested_at,
            )
        )

    async def record(self, request_id: str, erased: Erased) -> None:
        await self._conn.execute(
            "UPDATE erasures SET orders = $2, rows_changed = $3 WHERE request_id = $1",
            request_id,
            erased.orders,
            erased.rows,
        )

    async def covering(self, customer_ids: Sequence[str]) -> list[Erasure]:
        if not customer_ids:
            return []
        rows = await self._conn.fetch(
            "SELECT request_id, channel, customer_digest, requested_at FROM erasures_covering($1::text[])",
            [customer_digest(c) for c in customer_ids],
        )
        return [Erasure(r["request_id"], r["channel"], r["customer_digest"], r["requested_at"]) for r in rows]
