"""What intake's use cases need from storage, as ports; PostgreSQL and in-memory fakes implement them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from libs.contracts.orders import OrderDetails, OrderStatusChanged
from libs.contracts.privacy import ErasureRequested
from libs.platform.erasures import Erased, ErasureLedger
from services.intake.domain.orders import Order


@dataclass(frozen=True)
class NewOrder:
    """A channel order to record: what the channel said, its fingerprint, and its first status."""

    details: OrderDetails
    fingerprint: str
    received: OrderStatusChanged

    @property
    def order_id(self) -> UUID:
        return self.received.order_id


class OrderBook(Protocol):
    """Every order intake gave an id: its fingerprint, current status and version, and its timeline
    (exactly the status events published, one per version)."""

    async def add(self, orders: Sequence[NewOrder]) -> dict[UUID, str]:
        """Record each order (distinct ids) that is not on file yet, with its first timeline entry;
        leave the others as they are and return what was on file for them: order id -> the
        fingerprint of the content first recorded."""
        ...

    async def lock(self, order_ids: Sequence[UUID]) -> dict[UUID, Order]:
        """The orders that exist among these, locked until the transaction ends."""
        ...

    async def record_statuses(self, changes: Sequence[OrderStatusChanged]) -> None:
        """New versions (each the next of its order, in order): timeline entries and current status."""
        ...

    async def find(self, order_id: UUID) -> Order | None: ...

    async def find_by_channel(self, channel: str, external_id: str) -> Order | None: ...

    async def current_details(self, order_id: UUID) -> OrderDetails:
        """The order as it stands now: as the channel placed it, or as last edited."""
        ...

    async def replace_details(self, order_id: UUID, details: OrderDetails) -> None:
        """An accepted edit: the order's details from now on (its fingerprint stays the submission's)."""
        ...

    async def erase(self, request: ErasureRequested) -> Erased:
        """Erase the details (``erase_order``) of the customer's orders placed before the request
        (``covers``); ids, fingerprints, statuses and timelines stay."""
        ...


class CancelRequests(Protocol):
    """The cancel requests acted on: each request id once, whatever the number of times it is sent."""

    async def claim(self, request_id: str, order_id: UUID) -> bool:
        """False when this request id was acted on before."""
        ...


class PaymentEvents(Protocol):
    """The payment events passed on: each payment event id once, whatever the number of times it is sent."""

    async def first_time(self, payment_event_id: str, order_id: UUID) -> bool:
        """False when this payment event was passed on before."""
        ...


class EditRequests(Protocol):
    """The edit requests acted on: each request id once."""

    async def claim(self, request_id: str, order_id: UUID) -> bool:
        """False when this request id was acted on before."""
        ...


class IntakeUnit(Protocol):
    """One transaction's view of intake's storage."""

    @property
    def orders(self) -> OrderBook: ...

    @property
    def cancel_requests(self) -> CancelRequests: ...

    @property
    def payment_events(self) -> PaymentEvents: ...

    @property
    def edit_requests(self) -> EditRequests: ...

    @property
    def erasures(self) -> ErasureLedger: ...
