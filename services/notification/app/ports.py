"""What notification's use cases and delivery worker need from the world, as ports.

The message handlers get a ``NotificationUnit`` (one transaction's view of notification's store);
the delivery worker gets the two queues, a webhook sender, templates and a mail sender. PostgreSQL,
aiohttp, aiosmtplib and in-memory fakes implement them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from libs.contracts.privacy import ErasureRequested
from libs.platform.erasures import ErasureLedger
from libs.platform.records import Outgoing
from services.notification.domain.read_model import OrderView, ShipmentStage

# What the message handlers record.


@dataclass(frozen=True)
class Subscriber:
    """An active webhook subscription as fan-out sees it: who, and which event keys it wants."""

    subscription_id: str
    events: frozenset[str]


@dataclass(frozen=True)
class NewSubscription:
    subscription_id: str
    url: str
    secret: str
    events: tuple[str, ...]


@dataclass(frozen=True)
class NewDelivery:
    """One event for one subscriber; ``delivery_id`` is stable, so a redelivered event adds nothing."""

    delivery_id: str
    subscription_id: str
    event_key: str
    body: bytes


@dataclass(frozen=True)
class NewEmail:
    """One e-mail per order and status; ``context`` fills its template beside the customer's details."""

    order_id: UUID
    status: str
    context: Mapping[str, str]


@dataclass(frozen=True)
class Contact:
    """Where to write to an order's customer (status events carry no personal data), and whose
    contact it is (the channel's customer id, when the order was placed) so an erasure finds it.
    An ``erased`` contact holds the erased markers and gets no e-mail."""

    order_id: UUID
    email: str
    name: str
    external_id: str
    channel: str | None = None
    customer_id: str | None = None
    placed_at: datetime | None = None
    erased: bool = False


@dataclass(frozen=True)
class TimelineEntry:
    """One public event in an order's timeline, as the event's own JSON."""

    order_id: UUID
    kind: Literal["status", "stage"]
    event: str
    occurred_at: datetime


class Subscriptions(Protocol):
    async def active(self) -> Sequence[Subscriber]:
        """The active subscriptions (may be up to a second old, never older than a committed change
        made by this process)."""
        ...

    async def add(self, subscription: NewSubscription) -> None:
        """Add it, or replace the one with its id (re-activating it)."""
        ...

    async def deactivate(self, subscription_id: str) -> None: ...


class Deliveries(Protocol):
    async def add(self, deliveries: Sequence[NewDelivery]) -> None:
        """Queue them, due now; a delivery id already known is left as it is."""
        ...

    async def cancel_pending(self, subscription_id: str, reason: str) -> None:
        """The subscription's pending deliveries become `cancelled`: they are never sent."""
        ...

    async def redeliver(self, delivery_id: str | None, subscription_id: str | None) -> None:
        """Dead deliveries (this one, or all of this subscription's) are pending again, due now, with
        a fresh attempt budget; their attempts so far stay recorded."""
        ...


class Emails(Protocol):
    async def add(self, emails: Sequence[NewEmail]) -> None:
        """Queue them, due now; an (order, status) already queued or sent is left as it is, and an
        order whose contact was erased gets none."""
        ...

    async def forget(self, order_ids: Sequence[UUID]) -> int:
        """These orders' e-mails are never sent (pending ones become `cancelled`) and keep no error
        text (a mail server's refusal may quote the address); returns the rows changed."""
        ...


class Customers(Protocol):
    async def remember(self, contacts: Sequence[Contact]) -> None:
        """Keep the first contact seen per order."""
        ...

    async def erase(self, request: ErasureRequested) -> list[UUID]:
        """Erase the contacts of the customer's orders placed before the request (name and e-mail
        become the erased markers, the customer id goes); returns their order ids."""
        ...


class ReadModel(Protocol):
    async def record_statuses(self, views: Sequence[OrderView], timeline: Sequence[TimelineEntry]) -> None:
        """Store each order's view unless the stored one has the same or a higher version (the
        stored ETA and shipments stay when the view gives none); append the entries in order."""
        ...

    async def record_stages(self, stages: Sequence[ShipmentStage], timeline: Sequence[TimelineEntry]) -> None:
        """Store each parcel's stage (the stored stage stays when it gives none); append the entries."""
        ...


class NotificationUnit(Protocol):
    """One transaction's view of notification's store."""

    @property
    def subscriptions(self) -> Subscriptions: ...

    @property
    def deliveries(self) -> Deliveries: ...

    @property
    def emails(self) -> Emails: ...

    @property
    def customers(self) -> Customers: ...

    @property
    def read_model(self) -> ReadModel: ...

    @property
    def erasures(self) -> ErasureLedger: ...


# What the delivery worker works from.


@dataclass(frozen=True)
class DueDelivery:
    """A claimed delivery: leased to this worker until its attempt is recorded (or the lease ends)."""

    delivery_id: str
    subscription_id: str
    url: str
    secret: str
    body: bytes
    attempts: int
    """Attempts ever made."""
    round_attempts: int
    """Attempts since it was last (re)queued: the budget ``webhook_max_attempts`` counts these."""


@dataclass(frozen=True)
class PostOutcome:
    """What one POST came to: the HTTP status, or why there was none."""

    status_code: int | None
    transport_error: str | None
    duration_ms: int


@dataclass(frozen=True)
class Attempt:
    """One attempt as recorded: ``error`` is None when it was delivered."""

    status_code: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True)
class Delivered:
    pass


@dataclass(frozen=True)
class Retry:
    delay_s: float


@dataclass(frozen=True)
class Dead:
    """Given up: ``dead_letter`` goes out through the outbox in the same transaction."""

    dead_letter: Outgoing


AfterAttempt = Delivered | Retry | Dead


class DeliveryQueue(Protocol):
    """The webhook deliveries waiting to be sent, shared by every notification process."""

    async def claim(self, slots: int, busy: Mapping[str, int], lease_s: float) -> list[DueDelivery]:
        """Each active subscription's own oldest due pending deliveries, at most ``slots`` minus the
        ones it has in flight here (``busy``), leased for ``lease_s``; a removed subscription's
        deliveries are never claimed."""
        ...

    async def record(self, due: DueDelivery, attempt: Attempt, then: AfterAttempt) -> bool:
        """Record the attempt and apply ``then``, in one transaction; False when the delivery was no
        longer pending (cancelled meanwhile): the attempt is recorded and the delivery stays as it is."""
        ...


@dataclass(frozen=True)
class DueEmail:
    order_id: UUID
    status: str
    attempts: int
    """Attempts before this one."""
    email: str
    name: str
    external_id: str
    context: Mapping[str, str]


@dataclass(frozen=True)
class EmailResult:
    """What becomes of a claimed e-mail: `sent`, `retry` after ``retry_in_s``, or `dead`."""

    order_id: UUID
    status: str
    state: Literal["sent", "retry", "dead"]
    error: str | None = None
    retry_in_s: float = 0.0


class EmailRound(Protocol):
    @property
    def due(self) -> Sequence[DueEmail]: ...

    async def record(self, results: Sequence[EmailResult]) -> None: ...


class EmailQueue(Protocol):
    """The customer e-mails waiting to be sent, shared by every notification process."""

    def round(self, limit: int) -> AbstractAsyncContextManager[EmailRound]:
        """Up to ``limit`` due e-mails whose customer is known (and not erased), oldest due first, leased to this round
        (no other process takes them; if this one dies they are due again when the lease ends)."""
        ...


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


class Templates(Protocol):
    def render(self, name: str, values: Mapping[str, str]) -> Rendered:
        """The template ``name`` filled with ``values``; raises when it cannot be rendered."""
        ...


@dataclass(frozen=True)
class Mail:
    message_id: str
    sender: str
    recipient: str
    subject: str
    body: str


class MailSender(Protocol):
    async def send(self, mails: Sequence[Mail]) -> list[str | None]:
        """Send each one; per mail, in order, None when the server accepted it or why it did not."""
        ...


class WebhookSender(Protocol):
    async def post(self, url: str, secret: str, webhook_id: str, body: bytes) -> PostOutcome:
        """One POST of ``body`` signed the Standard Webhooks way under ``webhook_id``."""
        ...


class OrderStatusQueries(Protocol):
    """What the status API reads."""

    async def order(self, order_id: UUID) -> dict[str, Any] | None:
        """The order's view as JSON-ready data: status, shipments with stage, ETA, timeline."""
        ...

    async def find(self, channel: str, external_id: str) -> UUID | None: ...

    async def ready(self) -> bool: ...
