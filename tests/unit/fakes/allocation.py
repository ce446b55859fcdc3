"""Allocation's storage ports in memory: the use cases run without PostgreSQL, in microseconds.

Faithful where it matters: reserving more than is free raises ``OversellRefused`` and takes
nothing, on hand never drops below reserved, an order is added once, and backorders wait in the
order they were backordered. ``calls`` counts each port call (the Pg adapter's statements follow
them one to one or close), so tests can see that a batch reads and writes once.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from libs.contracts.orders import OrderDetails
from libs.contracts.privacy import Erasure, ErasureRequested, covers, erase_order
from services.allocation.app.ports import (
    Allocation,
    AllocationChange,
    AllocationConflict,
    NewAllocation,
    OversellRefused,
    PaymentRecord,
    Release,
    Waiting,
)
from services.allocation.domain.allocations import (
    AllocationStatus,
    Lines,
    Reservation,
    ReservationStatus,
    ReservedLine,
)
from services.allocation.domain.sourcing import Location
from services.allocation.domain.stock import Adjustment, StockLevel
from tests.unit.fakes.erasures import FakeErasureLedger
from tests.unit.fakes.timers import FakeTimers


@dataclass
class Units:
    on_hand: int = 0
    reserved: int = 0
    shipped: int = 0
    written_off: int = 0


@dataclass
class Row:
    status: AllocationStatus
    order: OrderDetails | None
    skus: frozenset[str]
    generation: int
    pending: Lines | None = None
    place: int | None = None


@dataclass
class Line:
    order_id: UUID
    location_id: str
    quantity: int
    status: ReservationStatus = ReservationStatus.RESERVED


@dataclass
class FakeAllocationState:
    """Everything the fake ports share: one in-memory allocation schema."""

    locations: dict[str, Location] = field(default_factory=dict)
    stock: dict[tuple[str, str], Units] = field(default_factory=dict)
    adjustments: dict[str, Adjustment] = field(default_factory=dict)
    orders: dict[UUID, Row] = field(default_factory=dict)
    lines: dict[tuple[str, str], Line] = field(default_factory=dict)
    serialised: set[str] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)
    queue: itertools.count[int] = field(default_factory=itertools.count)
    payments: dict[UUID, PaymentRecord] = field(default_factory=dict)
    timers: FakeTimers = field(default_factory=FakeTimers)
    fallbacks: dict[UUID, int] = field(default_factory=dict)

    def units(self, sku: str, location_id: str) -> Units:
        return self.stock.get((sku, location_id), Units())


class FakeLocations:
    def __init__(self, state: FakeAllocationState) -> None:
        self._s = state

    async def upsert(self, location: Location, name: str) -> None:
        self._s.calls["locations.upsert"] += 1
        self._s.locations[location.location_id] = location

    async def active(self) -> list[Location]:
        self._s.calls["locations.active"] += 1
        return [loc for loc in self._s.locations.values() if loc.active]


class FakeStockLedger:
    def __init__(self, state: FakeAllocationState) -> None:
        self._s = state

    async def serialise(self, skus: Sequence[str]) -> None:
        self._s.calls["stock.serialise"] += 1
        self._s.serialised.update(skus)

    async def lock(self, skus: Sequence[str]) -> list[StockLevel]:
        self._s.calls["stock.lock"] += 1
        self._s.serialised.update(skus)
        wanted = set(skus)
        return [
            StockLevel(sku, loc, units.on_hand, units.reserved)
            for (sku, loc), units in sorted(self._s.stock.items())
            if sku in wanted
        ]

    async def lock_level(self, sku: str, location_id: str) -> StockLevel:
        self._s.calls["stock.lock_level"] += 1
        self._s.serialised.add(sku)
        units = self._s.stock.setdefault((sku, location_id), Units())
        return StockLevel(sku, location_id, units.on_hand, units.reserved)

    async def wanted_at(self, location_id: str) -> list[str]:
        self._s.calls["stock.wanted_at"] += 1
        waited_for = {
            sku
            for row in self._s.orders.values()
            if row.status is AllocationStatus.BACKORDERED
            for sku in row.skus
        }
        return sorted(
            sku
            for (sku, loc), units in self._s.stock.items()
            if loc == location_id and units.on_hand > units.reserved and sku in waited_for
        )

    async def adjustment_applied(self, adjustment_id: str) -> bool:
        self._s.calls["stock.adjustment_applied"] += 1
        return adjustment_id in self._s.adjustments

    async def apply(self, adjustment: Adjustment) -> None:
        self._s.calls["stock.apply"] += 1
        units = self._s.stock[(adjustment.sku, adjustment.location_id)]
        if adjustment.on_hand_after < units.reserved:
            raise ValueError("CHECK (reserved <= on_hand) violated")
        if adjustment.adjustment_id in self._s.adjustments:
            raise ValueError(f"adjustment {adjustment.adjustment_id} recorded twice")
        units.on_hand = adjustment.on_hand_after
        self._s.adjustments[adjustment.adjustment_id] = adjustment

    async def reserve(self, reservations: Sequence[Reservation]) -> None:
        if not reservations:
            return
        self._s.calls["stock.reserve"] += 1
        wanted: Counter[tuple[str, str]] = Counter()
        for r in reservations:
            wanted[(r.sku, r.location_id)] += r.quantity
            if (r.shipment_id, r.sku) in self._s.lines:
                raise ValueError(f"reservation {r.shipment_id}/{r.sku} written twice")
        short = [
            key for key, n in wanted.items() if self._s.units(*key).on_hand - self._s.units(*key).reserved < n
        ]
        if short:
            raise OversellRefused(f"fewer units free than planned at {short}")
        for key, n in wanted.items():
            self._s.stock[key].reserved += n
        for r in reservations:
            self._s.lines[(r.shipment_id, r.sku)] = Line(r.order_id, r.location_id, r.quantity)

    async def settle(self, shipment_id: str, outcome: ReservationStatus) -> list[ReservedLine]:
        self._s.calls["stock.settle"] += 1
        settled = []
        for (sid, sku), line in sorted(self._s.lines.items()):
            if sid != shipment_id or line.status is not ReservationStatus.RESERVED:
                continue
            line.status = outcome
            units = self._s.stock[(sku, line.location_id)]
            units.on_hand -= line.quantity
            units.reserved -= line.quantity
            if outcome is ReservationStatus.SHIPPED:
                units.shipped += line.quantity
            else:
                units.written_off += line.quantity
            settled.append(ReservedLine(sid, line.location_id, sku, line.quantity, outcome))
        return settled

    async def lose(self, shipment_id: str) -> list[ReservedLine]:
        self._s.calls["stock.lose"] += 1
        lost = []
        for (sid, sku), line in sorted(self._s.lines.items()):
            if sid != shipment_id or line.status is not ReservationStatus.SHIPPED:
                continue
            line.status = ReservationStatus.LOST
            units = self._s.stock[(sku, line.location_id)]
            units.shipped -= line.quantity
            units.written_off += line.quantity
            lost.append(ReservedLine(sid, line.location_id, sku, line.quantity, ReservationStatus.LOST))
        return lost

    async def release(self, lines: Sequence[Release]) -> None:
        if not lines:
            return
        self._s.calls["stock.release"] += 1
        wanted: Counter[tuple[str, str]] = Counter()
        for release in lines:
            wanted[(release.shipment_id, release.sku)] += release.quantity
        for key, quantity in wanted.items():
            line = self._s.lines.get(key)
            if line is None or line.status is not ReservationStatus.RESERVED:
                continue
            units = min(quantity, line.quantity)
            if units == line.quantity:
                line.status = ReservationStatus.RELEASED
            else:
                line.quantity -= units
            self._s.stock[(key[1], line.location_id)].reserved -= units


class FakeAllocations:
    def __init__(self, state: FakeAllocationState) -> None:
        self._s = state

    async def known(self, order_ids: Sequence[UUID]) -> set[UUID]:
        self._s.calls["allocations.known"] += 1
        return {order_id for order_id in order_ids if order_id in self._s.orders}

    async def add(self, allocations: Sequence[NewAllocation]) -> None:
        if not allocations:
            return
        self._s.calls["allocations.add"] += 1
        if clash := [a.order_id for a in allocations if a.order_id in self._s.orders]:
            raise AllocationConflict(f"allocated meanwhile: {clash}")
        for a in allocations:
            backordered = a.status is AllocationStatus.BACKORDERED
            self._s.orders[a.order_id] = Row(
                a.status,
                a.order,
                frozenset(line.sku for line in a.order.lines),
                a.generation,
                pending=a.pending,
                place=next(self._s.queue) if backordered else None,
            )

    async def lock(self, order_id: UUID) -> Allocation | None:
        self._s.calls["allocations.lock"] += 1
        row = self._s.orders.get(order_id)
        if row is None:
            return None
        order = None if row.status is AllocationStatus.CANCELLED else row.order
        return Allocation(order_id, row.status, row.generation, row.pending, order)

    async def tombstone(self, order_id: UUID) -> None:
        self._s.calls["allocations.tombstone"] += 1
        if (row := self._s.orders.get(order_id)) is not None:
            row.status = AllocationStatus.CANCELLED
        else:
            self._s.orders[order_id] = Row(AllocationStatus.CANCELLED, None, frozenset(), 0)

    async def update(self, changes: Sequence[AllocationChange]) -> None:
        if not changes:
            return
        self._s.calls["allocations.update"] += 1
        for change in changes:
            row = self._s.orders[change.order_id]
            if (
                change.status is AllocationStatus.BACKORDERED
                and row.status is not AllocationStatus.BACKORDERED
            ):
                row.place = next(self._s.queue)
            row.status, row.generation, row.pending = change.status, change.generation, change.pending

    async def replace_order(self, order_id: UUID, order: OrderDetails) -> None:
        self._s.orders[order_id].order = order

    async def reservations(self, order_ids: Sequence[UUID]) -> dict[UUID, list[ReservedLine]]:
        self._s.calls["allocations.reservations"] += 1
        by_order: dict[UUID, list[ReservedLine]] = {}
        for (sid, sku), line in sorted(self._s.lines.items()):
            if line.order_id in order_ids:
                by_order.setdefault(line.order_id, []).append(
                    ReservedLine(sid, line.location_id, sku, line.quantity, line.status)
                )
        return by_order

    async def lock_waiting(self, skus: Sequence[str]) -> list[Waiting]:
        self._s.calls["allocations.lock_waiting"] += 1
        waiting = [
            (row.place or 0, str(order_id), Waiting(order_id, row.order, row.generation, row.pending))
            for order_id, row in self._s.orders.items()
            if row.status is AllocationStatus.BACKORDERED and row.order is not None and row.skus & set(skus)
        ]
        return [w for _, _, w in sorted(waiting, key=lambda t: (t[0], t[1]))]

    async def erase(self, request: ErasureRequested) -> int:
        self._s.calls["allocations.erase"] += 1
        erasure = Erasure.of(request)
        covered = [
            row for row in self._s.orders.values() if row.order is not None and covers(erasure, row.order)
        ]
        for row in covered:
            row.order = erase_order(row.order) if row.order is not None else None
        return len(covered)


class FakePayments:
    def __init__(self, state: FakeAllocationState) -> None:
        self._s = state

    async def of(self, order_ids: Sequence[UUID]) -> dict[UUID, PaymentRecord]:
        self._s.calls["payments.of"] += 1
        return {o: self._s.payments[o] for o in order_ids if o in self._s.payments}

    async def set(self, order_id: UUID, record: PaymentRecord) -> None:
        self._s.calls["payments.set"] += 1
        self._s.payments[order_id] = record


class FakeFallbacks:
    def __init__(self, state: FakeAllocationState) -> None:
        self._s = state

    async def of(self, order_ids: Sequence[UUID]) -> dict[UUID, int]:
        return {o: self._s.fallbacks[o] for o in order_ids if o in self._s.fallbacks}

    async def reach(self, order_id: UUID, tier: int) -> None:
        self._s.fallbacks[order_id] = max(tier, self._s.fallbacks.get(order_id, tier))


class FakeAllocationUnit:
    """Implements ``AllocationUnit`` over one ``FakeAllocationState``."""

    def __init__(self, state: FakeAllocationState | None = None) -> None:
        self.state = state or FakeAllocationState()
        self._locations = FakeLocations(self.state)
        self._stock = FakeStockLedger(self.state)
        self._allocations = FakeAllocations(self.state)
        self._payments = FakePayments(self.state)
        self.ledger = FakeErasureLedger()

    @property
    def locations(self) -> FakeLocations:
        return self._locations

    @property
    def stock(self) -> FakeStockLedger:
        return self._stock

    @property
    def allocations(self) -> FakeAllocations:
        return self._allocations

    @property
    def payments(self) -> FakePayments:
        return self._payments

    @property
    def timers(self) -> FakeTimers:
        return self.state.timers

    @property
    def fallbacks(self) -> FakeFallbacks:
        return FakeFallbacks(self.state)

    @property
    def erasures(self) -> FakeErasureLedger:
        return self.ledger
