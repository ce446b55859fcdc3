"""Fulfillment's storage ports in memory: the use cases run without PostgreSQL, in microseconds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass, field
from uuid import UUID

from services.fulfillment.domain.returns import Return, Terms
from services.fulfillment.domain.shipments import Location, Order, Shipment
from tests.unit.fakes.timers import FakeTimers


@dataclass
class FakeFulfillmentUnit:
    """Implements ``Orders``, ``Shipments``, ``Locations`` and ``AppliedUpdates`` with dictionaries;
    ``calls`` names the port methods called, so a test can see a batch cost one call per step."""

    known_orders: dict[UUID, Order] = field(default_factory=dict)
    known_shipments: dict[str, Shipment] = field(default_factory=dict)
    known_locations: dict[str, Location] = field(default_factory=dict)
    applied: dict[str, tuple[str, str]] = field(default_factory=dict)
    """update id -> (shipment id, outcome)"""
    known_terms: dict[UUID, Terms] = field(default_factory=dict)
    known_returns: dict[str, Return] = field(default_factory=dict)
    timers: FakeTimers = field(default_factory=FakeTimers)
    calls: list[str] = field(default_factory=list)
    """Port methods called with something to do (PostgreSQL runs no statement for an empty call)."""

    @property
    def orders(self) -> FakeOrders:
        return FakeOrders(self)

    @property
    def shipments(self) -> FakeShipments:
        return FakeShipments(self)

    @property
    def locations(self) -> FakeLocations:
        return FakeLocations(self)

    @property
    def updates(self) -> FakeAppliedUpdates:
        return FakeAppliedUpdates(self)

    @property
    def terms(self) -> FakeOrderTerms:
        return FakeOrderTerms(self)

    @property
    def returns(self) -> FakeReturns:
        return FakeReturns(self)

    def called(self, method: str, rows: Sized) -> None:
        if len(rows):
            self.calls.append(method)

    def shipments_of(self, order_id: UUID) -> list[Shipment]:
        return sorted(
            (s for s in self.known_shipments.values() if s.order_id == order_id), key=lambda s: s.shipment_id
        )


@dataclass
class FakeOrders:
    db: FakeFulfillmentUnit

    async def lock(self, order_ids: Sequence[UUID]) -> dict[UUID, Order]:
        self.db.called("orders.lock", order_ids)
        return {i: self.db.known_orders[i] for i in sorted(order_ids) if i in self.db.known_orders}

    async def lock_by_shipment(self, shipment_ids: Sequence[str]) -> dict[UUID, Order]:
        self.db.called("orders.lock_by_shipment", shipment_ids)
        owners = {self.db.known_shipments[s].order_id for s in shipment_ids if s in self.db.known_shipments}
        return {i: self.db.known_orders[i] for i in sorted(owners)}

    async def save(self, orders: Sequence[Order]) -> None:
        self.db.called("orders.save", orders)
        for order in orders:
            self.db.known_orders[order.order_id] = order


@dataclass
class FakeShipments:
    db: FakeFulfillmentUnit

    async def of_orders(self, order_ids: Sequence[UUID]) -> list[Shipment]:
        self.db.called("shipments.of_orders", order_ids)
        wanted = set(order_ids)
        return sorted(
            (s for s in self.db.known_shipments.values() if s.order_id in wanted), key=lambda s: s.shipment_id
        )

    async def add(self, shipments: Sequence[Shipment]) -> None:
        self.db.called("shipments.add", shipments)
        for s in shipments:
            assert s.order_id in self.db.known_orders, f"{s.shipment_id}: its order is not saved yet"
            assert s.shipment_id not in self.db.known_shipments, f"{s.shipment_id} added twice"
            self.db.known_shipments[s.shipment_id] = s

    async def save(self, shipments: Sequence[Shipment]) -> None:
        self.db.called("shipments.save", shipments)
        assert len({s.shipment_id for s in shipments}) == len(shipments), "a shipment saved twice in one call"
        for s in shipments:
            assert s.shipment_id in self.db.known_shipments, f"{s.shipment_id} saved before it was added"
            self.db.known_shipments[s.shipment_id] = s


@dataclass
class FakeLocations:
    db: FakeFulfillmentUnit

    async def upsert(self, location: Location) -> None:
        self.db.calls.append("locations.upsert")
        self.db.known_locations[location.location_id] = location

    async def of(self, location_ids: Sequence[str]) -> dict[str, Location]:
        self.db.called("locations.of", location_ids)
        return {i: self.db.known_locations[i] for i in location_ids if i in self.db.known_locations}


@dataclass
class FakeAppliedUpdates:
    db: FakeFulfillmentUnit

    async def claim(self, updates: Sequence[tuple[str, str]]) -> set[str]:
        self.db.called("updates.claim", updates)
        fresh = set()
        for update_id, shipment_id in updates:
            if update_id not in self.db.applied:
                self.db.applied[update_id] = (shipment_id, "claimed")
                fresh.add(update_id)
        return fresh

    async def record(self, outcomes: Mapping[str, str]) -> None:
        self.db.called("updates.record", outcomes)
        for update_id, outcome in outcomes.items():
            shipment_id, _ = self.db.applied[update_id]
            self.db.applied[update_id] = (shipment_id, outcome)


@dataclass
class FakeOrderTerms:
    db: FakeFulfillmentUnit

    async def keep(self, terms: Sequence[Terms]) -> None:
        self.db.called("terms.keep", terms)
        for t in terms:
            self.db.known_terms.setdefault(t.order_id, t)

    async def of(self, order_id: UUID) -> Terms | None:
        return self.db.known_terms.get(order_id)


@dataclass
class FakeReturns:
    db: FakeFulfillmentUnit

    async def get(self, return_id: str) -> Return | None:
        return self.db.known_returns.get(return_id)

    async def of_order(self, order_id: UUID) -> list[Return]:
        return sorted(
            (r for r in self.db.known_returns.values() if r.order_id == order_id), key=lambda r: r.return_id
        )

    async def add(self, ret: Return) -> bool:
        if ret.return_id in self.db.known_returns:
            return False
        self.db.known_returns[ret.return_id] = ret
        return True

    async def save(self, ret: Return) -> None:
        assert ret.return_id in self.db.known_returns, f"{ret.return_id} saved before it was added"
        self.db.known_returns[ret.return_id] = ret
