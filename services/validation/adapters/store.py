"""Validation's own PostgreSQL store: its copy of the catalog, customer history and held orders."""

from __future__ import annotations

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

    async def customer_has_history(self, customer_key: str) -> bool:
        count = await self._conn.fetchval(
            "SELECT validated_orders FROM customers WHERE customer_key = $1", customer_key
        )
        return bool(count)

    async def count_validated(self, customer_key: str) -> None:
        await self._conn.execute(
            "INSERT INTO customers (customer_key, validated_orders) VALUES ($1, 1)"
            " ON CONFLICT (customer_key) DO UPDATE SET validated_orders = customers.validated_orders + 1",
            customer_key,
        )

    async def hold(self, order_id: UUID, details_json: str) -> None:
        await self._conn.execute(
            "INSERT INTO held_orders (order_id, order_details) VALUES ($1, $2::jsonb) ON CONFLICT DO NOTHING",
            order_id,
            details_json,
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
