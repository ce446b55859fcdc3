"""What fulfillment's use cases need from storage, as ports; PostgreSQL and in-memory fakes implement them.

Every method takes and returns many rows at once, so a handler costs a few statements per batch,
not a few per order. One rule keeps concurrent handlers of one order apart: a handler locks the
orders it works on (``Orders.lock`` or ``Orders.lock_by_shipment``) before it reads their shipments,
once per call, so allocations, stage updates and cancels of one order never interleave.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol
from uuid import UUID

from libs.platform.timers import Timers
from services.fulfillment.domain.returns import Return, Terms
from services.fulfillment.domain.shipments import Location, Order, Shipment


class Orders(Protocol):
    """Fulfillment's orders: how each stands as a whole (progress announced, awaiting resources)."""

    async def lock(self, order_ids: Sequence[UUID]) -> dict[UUID, Order]:
        """The orders fulfillment knows among these, locked until the transaction ends (taken in
        order-id order, so two transactions locking several orders wait, never deadlock)."""
        ...

    async def lock_by_shipment(self, shipment_ids: Sequence[str]) -> dict[UUID, Order]:
        """The orders these shipments belong to, locked likewise (unknown shipments have none)."""
        ...

    async def save(self, orders: Sequence[Order]) -> None:
        """Insert orders not seen before; for known ones, their progress and awaiting flag."""
        ...


class Shipments(Protocol):
    """Each parcel in fulfillment: its pipeline, stage, lines and tracking."""

    async def of_orders(self, order_ids: Sequence[UUID]) -> list[Shipment]:
        """Every shipment of these orders, by shipment id."""
        ...

    async def add(self, shipments: Sequence[Shipment]) -> None: ...

    async def save(self, shipments: Sequence[Shipment]) -> None:
        """Their stage, lines, whether still in a pipeline, and tracking (each shipment once)."""
        ...


class Locations(Protocol):
    """Fulfillment's copy of the locations it ships from: the latest message per location wins."""

    async def upsert(self, location: Location) -> None: ...

    async def of(self, location_ids: Sequence[str]) -> dict[str, Location]:
        """The known ones among these."""
        ...


class AppliedUpdates(Protocol):
    """Stage updates by ``update_id``: a repeated id changes nothing."""

    async def claim(self, updates: Sequence[tuple[str, str]]) -> set[str]:
        """Take these (update id, shipment id) pairs; returns the ids never taken before, the ones
        to apply (a concurrent transaction taking the same id first makes this one wait)."""
        ...

    async def record(self, outcomes: Mapping[str, str]) -> None:
        """What each claimed update did: the kind of move, or the code of its refusal."""
        ...


class OrderTerms(Protocol):
    """What each order's customer paid, kept from its first allocation for refunds."""

    async def keep(self, terms: Sequence[Terms]) -> None:
        """Insert the terms of orders not seen before; known ones keep theirs (prices do not change)."""
        ...

    async def of(self, order_id: UUID) -> Terms | None: ...


class Returns(Protocol):
    """Returns by return id. Read under the lock of their order (``Orders.lock``)."""

    async def get(self, return_id: str) -> Return | None: ...

    async def of_order(self, order_id: UUID) -> list[Return]:
        """Every return of the order, by return id."""
        ...

    async def add(self, ret: Return) -> bool:
        """Record a decided return; False when its id was decided before (a repeat: change nothing)."""
        ...

    async def save(self, ret: Return) -> None:
        """A known return's state, receiving location and received lines."""
        ...


class FulfillmentUnit(Protocol):
    """One transaction's view of fulfillment's storage."""

    @property
    def orders(self) -> Orders: ...

    @property
    def shipments(self) -> Shipments: ...

    @property
    def locations(self) -> Locations: ...

    @property
    def updates(self) -> AppliedUpdates: ...

    @property
    def terms(self) -> OrderTerms: ...

    @property
    def returns(self) -> Returns: ...

    @property
    def timers(self) -> Timers:
        """Stage deadlines, scheduled in the transaction that moves the shipment."""
        ...
