"""Validation's storage ports in memory: the use cases run without PostgreSQL, in microseconds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from uuid import UUID

from libs.contracts.orders import OrderDetails
from libs.contracts.privacy import Erasure, ErasureRequested, covers, erase_order
from services.validation.domain.rules import Product
from tests.unit.fakes.erasures import FakeErasureLedger
from tests.unit.fakes.timers import FakeTimers


@dataclass
class FakeValidationUnit:
    """Implements ``Catalog``, ``CustomerHistory`` and ``HeldOrders`` with dictionaries."""

    known_products: dict[str, Product] = field(default_factory=dict)
    validated: dict[str, int] = field(default_factory=dict)
    held: dict[UUID, OrderDetails] = field(default_factory=dict)
    decisions: dict[UUID, tuple[str, str]] = field(default_factory=dict)
    ledger: FakeErasureLedger = field(default_factory=FakeErasureLedger)
    units: dict[tuple[str, date, str], int] = field(default_factory=dict)
    timers: FakeTimers = field(default_factory=FakeTimers)

    @property
    def catalog(self) -> FakeValidationUnit:
        return self

    @property
    def customers(self) -> FakeValidationUnit:
        return self

    @property
    def holds(self) -> FakeValidationUnit:
        return self

    @property
    def erasures(self) -> FakeErasureLedger:
        return self.ledger

    async def upsert(self, product: Product, name: str) -> None:
        self.known_products[product.sku] = product

    async def products(self, skus: Sequence[str]) -> dict[str, Product]:
        return {s: self.known_products[s] for s in skus if s in self.known_products}

    async def validated_counts(self, customer_keys: Sequence[str]) -> dict[str, int]:
        return {k: self.validated[k] for k in customer_keys if k in self.validated}

    async def count_validated(self, counts: Mapping[str, int]) -> None:
        for key, n in counts.items():
            self.validated[key] = self.validated.get(key, 0) + n

    async def daily_units(self, days: Sequence[tuple[str, date]]) -> dict[tuple[str, date], dict[str, int]]:
        found: dict[tuple[str, date], dict[str, int]] = {}
        for (customer, day, sku), n in self.units.items():
            if (customer, day) in days:
                found.setdefault((customer, day), {})[sku] = n
        return found

    async def add_daily_units(self, units: Mapping[tuple[str, date, str], int]) -> None:
        for key, n in units.items():
            self.units[key] = self.units.get(key, 0) + n

    async def prune_daily_units(self, before: date) -> int:
        old = [key for key in self.units if key[1] < before]
        for key in old:
            del self.units[key]
        return len(old)

    async def hold(self, orders: Sequence[tuple[UUID, OrderDetails]]) -> None:
        for order_id, order in orders:
            self.held.setdefault(order_id, order)

    async def undecided(self, order_id: UUID) -> OrderDetails | None:
        return self.held.get(order_id) if order_id not in self.decisions else None

    async def known(self, order_id: UUID) -> bool:
        return order_id in self.held

    async def decide(self, order_id: UUID, decision: str, decided_by: str) -> None:
        self.decisions[order_id] = (decision, decided_by)

    async def forget(self, customer_id: str, channel: str | None) -> int:
        def theirs(key: str) -> bool:
            key_channel, _, key_customer = key.partition(":")
            return key_customer == customer_id and channel in (None, key_channel)

        gone = [k for k in self.validated if theirs(k)]
        for key in gone:
            del self.validated[key]
        units = [k for k in self.units if theirs(k[0])]
        for unit in units:
            del self.units[unit]
        return len(gone) + len(units)

    async def erase(self, request: ErasureRequested) -> int:
        erasure = Erasure.of(request)
        covered = [i for i, order in self.held.items() if covers(erasure, order)]
        for order_id in covered:
            self.held[order_id] = erase_order(self.held[order_id])
        return len(covered)
