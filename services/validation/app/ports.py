"""What validation's use cases need from storage, as ports; PostgreSQL and in-memory fakes implement them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Protocol
from uuid import UUID

from libs.contracts.orders import OrderDetails
from libs.contracts.privacy import ErasureRequested
from libs.platform.erasures import ErasureLedger
from libs.platform.timers import Timers
from services.validation.domain.rules import Product


class Catalog(Protocol):
    """Validation's own copy of the catalog: the latest message per sku wins."""

    async def upsert(self, product: Product, name: str) -> None: ...

    async def products(self, skus: Sequence[str]) -> dict[str, Product]: ...


class CustomerHistory(Protocol):
    """How many orders of each customer were validated: none means a first-time customer."""

    async def validated_counts(self, customer_keys: Sequence[str]) -> dict[str, int]: ...

    async def count_validated(self, counts: Mapping[str, int]) -> None: ...

    async def daily_units(self, days: Sequence[tuple[str, date]]) -> dict[tuple[str, date], dict[str, int]]:
        """Units per sku of each (customer, day)'s validated orders."""
        ...

    async def add_daily_units(self, units: Mapping[tuple[str, date, str], int]) -> None: ...

    async def prune_daily_units(self, before: date) -> int: ...

    async def forget(self, customer_id: str, channel: str | None) -> int:
        """Delete the customer's history and daily units (on that channel, or on every channel);
        returns the rows."""
        ...


class HeldOrders(Protocol):
    """Orders waiting for a person's decision."""

    async def hold(self, orders: Sequence[tuple[UUID, OrderDetails]]) -> None: ...

    async def undecided(self, order_id: UUID) -> OrderDetails | None:
        """The held order if it still waits for a decision (locked until the transaction ends)."""
        ...

    async def known(self, order_id: UUID) -> bool: ...

    async def decide(self, order_id: UUID, decision: str, decided_by: str) -> None: ...

    async def erase(self, request: ErasureRequested) -> int:
        """Erase (``erase_order``) the held orders, decided or not, of the customer placed before the
        request (``covers``); returns how many."""
        ...


class ValidationUnit(Protocol):
    """One transaction's view of validation's storage."""

    @property
    def catalog(self) -> Catalog: ...

    @property
    def customers(self) -> CustomerHistory: ...

    @property
    def holds(self) -> HeldOrders: ...

    @property
    def erasures(self) -> ErasureLedger: ...

    @property
    def timers(self) -> Timers: ...
