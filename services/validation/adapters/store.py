"""Validation's own PostgreSQL store: its copy of the catalog, customer history and held orders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from uuid import UUID

import asyncpg

from libs.contracts.orders import OrderDetails
from libs.contracts.privacy import ErasureRequested
from libs.platform.erasure_store import ERASED_PATCH, PgErasureLedger, covered, erased_json
from libs.platform.timer_worker import PgTimers
from services.validation.domain.rules import Product

_HELD_CHANNEL = "order_details ->> 'channel'"


class PgValidationStore:
    """Implements the ``Catalog``, ``CustomerHistory`` and ``HeldOrders`` ports on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.erasures = PgErasureLedger(conn)

    @property
    def catalog(self) -> PgValidationStore:
        return self

    @property
    def customers(self) -> PgValidationStore:
        return self

    @property
    def holds(self) -> PgValidationStore:
        return self

    @property
    def timers(self) -> PgTimers:
        return PgTimers(self._conn)

    async def upsert(self, product: Product, name: str) -> None:
        await self._conn.execute(
            "INSERT INTO products (sku, name, price, currency, active) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (sku) DO UPDATE SET name = $2, price = $3, currency = $4, active = $5, updated_at = now()",
            product.sku,
            name,
            product.price,
            product.currency,
            product.active,
        )

    async def products(self, skus: Sequence[str]) -> dict[str, Product]:
        rows = await self._conn.fetch(
            "SELECT sku, price, currency, active FROM products WHERE sku = ANY($1::text[])", list(skus)
        )
        return {r["sku"]: Product(r["sku"], r["price"], r["currency"], r["active"]) for r in rows}

    async def validated_counts(self, customer_keys: Sequence[str]) -> dict[str, int]:
        rows = await self._conn.fetch(
            "SELECT customer_key, validated_orders FROM customers WHERE customer_key = ANY($1::text[])",
            list(customer_keys),
        )
        return {r["customer_key"]: r["validated_orders"] for r in rows}

    async def count_validated(self, counts: Mapping[str, int]) -> None:
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

    async def daily_units(self, days: Sequence[tuple[str, date]]) -> dict[tuple[str, date], dict[str, int]]:
        rows = await self._conn.fetch(
            "SELECT u.customer_key, u.day, u.sku, u.units FROM customer_daily_units u"
            " JOIN unnest($1::text[], $2::date[]) AS d(k, day) ON u.customer_key = d.k AND u.day = d.day",
            [k for k, _ in days],
            [d for _, d in days],
        )
        found: dict[tuple[str, date], dict[str, int]] = {}
        for r in rows:
            found.setdefault((r["customer_key"], r["day"]), {})[r["sku"]] = r["units"]
        return found

    async def add_daily_units(self, units: Mapping[tuple[str, date, str], int]) -> None:
        """In key order, like ``count_validated``: concurrent batches lock rows in one order."""
        keys = sorted(units)
        await self._conn.execute(
            "INSERT INTO customer_daily_units (customer_key, day, sku, units)"
            " SELECT k, d, s, n FROM unnest($1::text[], $2::date[], $3::text[], $4::int[])"
            " WITH ORDINALITY AS u(k, d, s, n, i) ORDER BY i"
            " ON CONFLICT (customer_key, day, sku) DO UPDATE"
            " SET units = customer_daily_units.units + EXCLUDED.units",
            [k for k, _, _ in keys],
            [d for _, d, _ in keys],
            [s for _, _, s in keys],
            [units[k] for k in keys],
        )

    async def prune_daily_units(self, before: date) -> int:
        status = await self._conn.execute("DELETE FROM customer_daily_units WHERE day < $1", before)
        return int(status.split()[-1])

    async def hold(self, orders: Sequence[tuple[UUID, OrderDetails]]) -> None:
        await self._conn.execute(
            "INSERT INTO held_orders (order_id, order_details)"
            " SELECT o, d::jsonb FROM unnest($1::uuid[], $2::text[]) AS h(o, d) ON CONFLICT DO NOTHING",
            [order_id for order_id, _ in orders],
            [order.model_dump_json() for _, order in orders],
        )

    async def undecided(self, order_id: UUID) -> OrderDetails | None:
        details = await self._conn.fetchval(
            "SELECT order_details::text FROM held_orders WHERE order_id = $1 AND decision IS NULL FOR UPDATE",
            order_id,
        )
        return OrderDetails.model_validate_json(details) if details is not None else None

    async def known(self, order_id: UUID) -> bool:
        return bool(await self._conn.fetchval("SELECT true FROM held_orders WHERE order_id = $1", order_id))

    async def decide(self, order_id: UUID, decision: str, decided_by: str) -> None:
        await self._conn.execute(
            "UPDATE held_orders SET decision = $2, decided_by = $3, decided_at = now() WHERE order_id = $1",
            order_id,
            decision,
            decided_by,
        )

    async def forget(self, customer_id: str, channel: str | None) -> int:
        """Both tables key a customer as `<channel>:<customer id>`, and a channel has no colon."""
        deleted = 0
        for table in ("customers", "customer_daily_units"):
            if channel is not None:
                status = await self._conn.execute(
                    f"DELETE FROM {table} WHERE customer_key = $1", f"{channel}:{customer_id}"
                )
            else:
                status = await self._conn.execute(
                    f"DELETE FROM {table} WHERE substr(customer_key, strpos(customer_key, ':') + 1) = $1",
                    customer_id,
                )
            deleted += int(status.split()[-1])
        return deleted

    async def erase(self, request: ErasureRequested) -> int:
        status = await self._conn.execute(
            f"UPDATE held_orders SET order_details = {erased_json('order_details', '$4')}"
            f" WHERE {covered('order_details', _HELD_CHANNEL, '$1', '$2', '$3')}",
            request.customer_id,
            request.channel,
            request.requested_at,
            ERASED_PATCH,
        )
        return int(status.split()[-1])
