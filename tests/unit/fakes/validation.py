"""Validation's storage ports in memory: the use cases run without PostgreSQL, in microseconds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from libs.contracts.orders import OrderDetails
from libs.contracts.privacy import Erasure, ErasureRequested, covers, erase_order
from services.validation.domain.rules import Product
from tests.unit.fakes.erasures import FakeErasureLedger


@dataclass
class FakeValidationUnit:
    """Implements ``Catalog``, ``CustomerHistory`` and ``HeldOrders`` with dictionaries."""

    known_products: dict[str, Product] = field(default_factory=dict)
    validated: dict[str, int] = field(default_factory=dict)
    held: dict[UUID, OrderDetails] = field(default_factory=dict)
    decisions: dict[UUID, tuple[str, str]] = field(default_factory=dict)
    ledger: FakeErasureLedger = field(default_factory=FakeErasureLedger)

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
        gone = [
            k
            for k in self.validated
            if k.partition(":")[2] == customer_id and channel in (None, k.partition(":")[0])
        ]
        for key in gone:
            del self.validated[key]
        return len(gone)

    async def erase(self, request: ErasureRequested) -> int:
        erasure = Erasure.of(request)
        covered = [i for i, order in self.held.items() if covers(erasure, order)]
        for order_id in covered:
            self.held[order_id] = erase_order(self.held[order_id])
        return len(covered)
