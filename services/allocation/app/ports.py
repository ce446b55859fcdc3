"""What allocation's use cases need from storage, as ports; PostgreSQL and in-memory fakes implement them.

Stock is only ever read locked, and per-sku transaction locks come before any stock row: a
transaction that finds no stock for a sku and one that brings its first units cannot miss each
other (the later one sees the earlier one's commit). ``StockLedger.lock`` takes both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from libs.contracts.orders import OrderDetails
from libs.contracts.privacy import ErasureRequested
from libs.platform.erasures import ErasureLedger
from libs.platform.timers import Timers
from services.allocation.domain.allocations import (
    AllocationStatus,
    Lines,
    Reservation,
    ReservationStatus,
    ReservedLine,
)
from services.allocation.domain.payments import PaymentState
from services.allocation.domain.sourcing import Location
from services.allocation.domain.stock import Adjustment, StockLevel


class OversellRefused(Exception):
    """A reservation found fewer free units than planned: a bug, never a customer-visible state.
    The transaction fails and nothing of it is written."""


class AllocationConflict(Exception):
    """An allocation row appeared for an order between reading and writing (another process took the
    same order): the transaction fails and is applied again, record by record."""


@dataclass(frozen=True)
class Allocation:
    """What allocation keeps of an order. ``order`` is None for an order cancelled before allocation
    saw it validated; ``pending`` are the lines waiting for stock after a parcel failed (None: the
    whole order, when backordered)."""

    order_id: UUID
    status: AllocationStatus
    generation: int
    pending: Lines | None
    order: OrderDetails | None


@dataclass(frozen=True)
class NewAllocation:
    """``pending``: the lines a `ship_available` order backorders while the rest ships."""

    order_id: UUID
    status: AllocationStatus
    generation: int
    order: OrderDetails
    pending: Lines | None = None


@dataclass(frozen=True)
class AllocationChange:
    """An order's new status; one that becomes backordered joins the end of the queue of waiting
    orders, one that stays backordered keeps its place."""

    order_id: UUID
    status: AllocationStatus
    generation: int
    pending: Lines | None


@dataclass(frozen=True)
class Waiting:
    """A backordered order: ``pending`` the lines it waits for (None: the whole order)."""

    order_id: UUID
    order: OrderDetails
    generation: int
    pending: Lines | None


@dataclass(frozen=True)
class Release:
    """Give back up to ``quantity`` reserved units of one shipment line."""

    shipment_id: str
    sku: str
    quantity: int


class Locations(Protocol):
    """Allocation's own copy of the locations: the latest message per location wins."""

    async def upsert(self, location: Location, name: str) -> None: ...

    async def active(self) -> list[Location]:
        """Every location that may ship now, as committed when asked (read once per transaction)."""
        ...


class StockLedger(Protocol):
    """Units per sku and location, the adjustments applied to them, and the reservations taking them."""

    async def serialise(self, skus: Sequence[str]) -> None:
        """Per-sku transaction locks, in sku order (re-entrant). Every path that frees units, adds
        them or looks for stock takes them before any stock row."""
        ...

    async def lock(self, skus: Sequence[str]) -> list[StockLevel]:
        """``serialise(skus)``, then every stock row of ``skus``, locked in sku/location order."""
        ...

    async def lock_level(self, sku: str, location_id: str) -> StockLevel:
        """The sku's locks, then its row at the location (created empty if there is none), locked."""
        ...

    async def wanted_at(self, location_id: str) -> list[str]:
        """Skus with free units at the location that a backordered order waits for, in sku order."""
        ...

    async def adjustment_applied(self, adjustment_id: str) -> bool: ...

    async def apply(self, adjustment: Adjustment) -> None:
        """Set the row's units on hand and record the adjustment (its id applies once)."""
        ...

    async def reserve(self, reservations: Sequence[Reservation]) -> None:
        """Take the units, or raise ``OversellRefused`` and take none: never more than is free."""
        ...

    async def settle(self, shipment_id: str, outcome: ReservationStatus) -> list[ReservedLine]:
        """The shipment's reserved units leave the stock, ``shipped`` or ``failed`` (written off at
        the location); returns the lines settled now (none when it was settled before). The caller
        holds the locks of the shipment's skus."""
        ...

    async def lose(self, shipment_id: str) -> list[ReservedLine]:
        """Write off a shipped parcel that will not arrive (its units left the stock when it shipped):
        its shipped lines become `lost`; returns them, or nothing when they were lost before."""
        ...

    async def release(self, lines: Sequence[Release]) -> None:
        """Reserved units go back to free stock. The caller holds the locks of the lines' skus."""
        ...


class Allocations(Protocol):
    """Orders as allocation knows them, their reservations, and the queue of backordered orders."""

    async def known(self, order_ids: Sequence[UUID]) -> set[UUID]:
        """The orders allocation has seen before (allocated, backordered or cancelled)."""
        ...

    async def add(self, allocations: Sequence[NewAllocation]) -> None:
        """Raises ``AllocationConflict`` if any of them exists already."""
        ...

    async def lock(self, order_id: UUID) -> Allocation | None:
        """The order, locked until the transaction ends; None if allocation never saw it."""
        ...

    async def tombstone(self, order_id: UUID) -> None:
        """A cancelled order allocation never saw: a late validation must not allocate it."""
        ...

    async def update(self, changes: Sequence[AllocationChange]) -> None: ...

    async def replace_order(self, order_id: UUID, order: OrderDetails) -> None:
        """An accepted edit: the order's details from now on."""
        ...

    async def reservations(self, order_ids: Sequence[UUID]) -> dict[UUID, list[ReservedLine]]:
        """Every reservation of these orders, whatever its status (orders with none are absent)."""
        ...

    async def lock_waiting(self, skus: Sequence[str]) -> list[Waiting]:
        """Backordered orders that need any of ``skus``, oldest first, locked; orders another
        transaction holds are skipped (it is deciding about them)."""
        ...

    async def erase(self, request: ErasureRequested) -> int:
        """Erase (``erase_order``) the kept details of the customer's orders placed before the
        request (``covers``), whatever their status; returns how many."""
        ...


@dataclass(frozen=True)
class PaymentRecord:
    """An order's payment as allocation keeps it; ``due_at`` the reservation deadline while pending."""

    state: PaymentState
    due_at: datetime | None = None


class Payments(Protocol):
    """The payment state of orders allocation tracks (pending ones, and events that came early)."""

    async def of(self, order_ids: Sequence[UUID]) -> dict[UUID, PaymentRecord]: ...

    async def set(self, order_id: UUID, record: PaymentRecord) -> None: ...


class Fallbacks(Protocol):
    """How many fallback tiers each backordered order has reached (0-based index of the last one)."""

    async def of(self, order_ids: Sequence[UUID]) -> dict[UUID, int]: ...

    async def reach(self, order_id: UUID, tier: int) -> None: ...


class AllocationUnit(Protocol):
    """One transaction's view of allocation's storage."""

    @property
    def locations(self) -> Locations: ...

    @property
    def stock(self) -> StockLedger: ...

    @property
    def allocations(self) -> Allocations: ...

    @property
    def payments(self) -> Payments: ...

    @property
    def timers(self) -> Timers: ...

    @property
    def fallbacks(self) -> Fallbacks: ...

    @property
    def erasures(self) -> ErasureLedger: ...
