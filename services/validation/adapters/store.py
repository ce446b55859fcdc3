"""Validation's own PostgreSQL store: its copy of the catalog, customer history and held orders."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from uuid import UUID

import asyncpg

from services.validation.domain.rules import Product


class PgValidationStore:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def upsert_product(self, sku: str, name: str, price: Decimal, currency: str, active: bool) -> None:
        await self._conn.execute(
            "INSERT INTO products (sku, name, price, currency, active) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (sku) DO UPDATE SET name = $2, price = $3, currency = $4, active = $5, updated_at = now()",
            sku,
            name,
            price,
            currency,
            active,
        )

    async def products(self, skus: list[str]) -> dict[str, Product]:
        rows = await self._conn.fetch(
            "SELECT sku, price, currency, active FROM products WHERE sku = ANY($1::text[])", skus
        )
        return {r["sku"]: Product(r["sku"], r["price"], r["currency"], r["active"]) for r in rows}

    async def validated_counts(self, customer_keys: list[str]) -> dict[str, int]:
        rows = await self._conn.fetch(
            "SELECT customer_key, validated_orders FROM customers WHERE customer_key = ANY($1::text[])",
            customer_keys,
        )
        return {r["customer_key"]: r["validated_orders"] for r in rows}

    async def count_validated_many(self, counts: Mapping[str, int]) -> None:
        """In customer order: two processes updating the same customers lock them in one order."""
        keys = sorted(counts)
        await self._conn.execute(
            "INSERT INTO customers (customer_key, validated_orders)"
            " SELECT k, n FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS c(k, n, i) ORDER BY i"
            " ON CONFLICT (customer_key) DO UPDATE"
            " SET validated_orders = customers.validated_orders + EXCLUDED.validated_orders",
            keys,
            [counts[k] for k in keys],
        )

    async def hold_many(self, holds: list[tuple[UUID, str]]) -> None:
        await self._conn.execute(
            "INSERT INTO held_orders (order_id, order_details)"
            " SELECT o, d::jsonb FROM unnest($1::uuid[], $2::text[]) AS h(o, d) ON CONFLICT DO NOTHING",
            [h[0] for h in holds],
            [h[1] for h in holds],
        )

    async def undecided_hold(self, order_id: UUID) -> str | None:
        """The held order's details if it still waits for a decision (row locked), else None."""
        details = await self._conn.fetchval(
            "SELECT order_details::text FROM held_orders WHERE order_id = $1 AND decision IS NULL FOR UPDATE",
            order_id,
        )
        return str(details) if details is not None else None

    async def is_known_hold(self, order_id: UUID) -> bool:
        return bool(await self._conn.fetchval("SELECT true FROM held_orders WHERE order_id = $1", order_id))

    async def decide(self, order_id: UUID, decision: str, decided_by: str) -> None:
        await self._conn.execute(
            "UPDATE held_orders SET decision = $2, decided_by = $3, decided_at = now() WHERE order_id = $1",
            order_id,
            decision,
            decided_by,
        )
