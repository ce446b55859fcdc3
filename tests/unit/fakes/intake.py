"""Intake's storage ports in memory: the use cases run without PostgreSQL, in microseconds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from libs.contracts.orders import OrderDetails, OrderStatusChanged
from libs.contracts.privacy import Erasure, ErasureRequested, covers, erase_order
from libs.platform.erasures import Erased
from services.intake.app.ports import NewOrder
from services.intake.domain.orders import Order
from tests.unit.fakes.erasures import FakeErasureLedger


@dataclass
class FakeIntakeUnit:
    """Implements ``OrderBook`` and ``CancelRequests`` with dictionaries, and keeps the guarantees
    PostgreSQL keeps for intake: one row per order, gapless versions (a version that is not the
    next of its order fails, like the timeline's primary key and the use cases' promise)."""

    known: dict[UUID, Order] = field(default_factory=dict)
    fingerprints: dict[UUID, str] = field(default_factory=dict)
    details: dict[UUID, OrderDetails] = field(default_factory=dict)
    timeline: dict[UUID, list[OrderStatusChanged]] = field(default_factory=dict)
    cancels: dict[str, UUID] = field(default_factory=dict)
    payments: dict[str, UUID] = field(default_factory=dict)
    edits: dict[str, UUID] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    ledger: FakeErasureLedger = field(default_factory=FakeErasureLedger)

    @property
    def orders(self) -> FakeIntakeUnit:
        return self

    @property
    def cancel_requests(self) -> FakeIntakeUnit:
        return self

    @property
    def payment_events(self) -> FakeIntakeUnit:
        return self

    @property
    def edit_requests(self) -> FakeEditRequests:
        return FakeEditRequests(self.edits)

    async def current_details(self, order_id: UUID) -> OrderDetails:
        return self.details[order_id]

    async def replace_details(self, order_id: UUID, details: OrderDetails) -> None:
        self.details[order_id] = details

    @property
    def erasures(self) -> FakeErasureLedger:
        return self.ledger

    async def add(self, orders: Sequence[NewOrder]) -> dict[UUID, str]:
        self.calls.append("add")
        ids = [o.order_id for o in orders]
        assert len(set(ids)) == len(ids), "add takes distinct orders"
        on_file = {}
        for new in orders:
            if new.order_id in self.known:
                on_file[new.order_id] = self.fingerprints[new.order_id]
                continue
            first = new.received
            assert first.version == 1
            self.known[new.order_id] = Order(
                new.order_id, first.channel, first.external_id, first.status, 1, datetime.now(UTC)
            )
            self.fingerprints[new.order_id] = new.fingerprint
            self.details[new.order_id] = new.details
            self.timeline[new.order_id] = [first]
        return on_file

    async def lock(self, order_ids: Sequence[UUID]) -> dict[UUID, Order]:
        self.calls.append("lock")
        return {i: self.known[i] for i in order_ids if i in self.known}

    async def record_statuses(self, changes: Sequence[OrderStatusChanged]) -> None:
        self.calls.append("record_statuses")
        for change in changes:
            order = self.known[change.order_id]
            assert change.version == order.version + 1, f"version {change.version} after {order.version}"
            self.known[change.order_id] = dataclasses.replace(
                order, status=change.status, version=change.version
            )
            self.timeline[change.order_id].append(change)

    async def find(self, order_id: UUID) -> Order | None:
        return self.known.get(order_id)

    async def find_by_channel(self, channel: str, external_id: str) -> Order | None:
        return next(
            (o for o in self.known.values() if (o.channel, o.external_id) == (channel, external_id)), None
        )

    async def erase(self, request: ErasureRequested) -> Erased:
        erasure = Erasure.of(request)
        covered = [i for i, d in self.details.items() if covers(erasure, d)]
        for order_id in covered:
            self.details[order_id] = erase_order(self.details[order_id])
        return Erased(len(covered), len(covered))

    async def claim(self, request_id: str, order_id: UUID) -> bool:
        if request_id in self.cancels:
            return False
        self.cancels[request_id] = order_id
        return True

    async def first_time(self, payment_event_id: str, order_id: UUID) -> bool:
        if payment_event_id in self.payments:
            return False
        self.payments[payment_event_id] = order_id
        return True

    def statuses(self, order_id: UUID) -> list[str]:
        """The order's timeline as statuses, oldest first."""
        return [e.status.value for e in self.timeline.get(order_id, [])]


@dataclass
class FakeEditRequests:
    claimed: dict[str, UUID]

    async def claim(self, request_id: str, order_id: UUID) -> bool:
        if request_id in self.claimed:
            return False
        self.claimed[request_id] = order_id
        return True
