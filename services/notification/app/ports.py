"""What notification's use cases and delivery worker need from the world, as ports.

The message handlers get a ``NotificationUnit`` (one transaction's view of notification's store);
the delivery worker gets the two queues, a webhook sender, templates and a mail sender. PostgreSQL,
aiohttp, aiosmtplib and in-memory fakes implement them. Subscriptions also need a ``Resolver`` (the
egress guard resolves webhook hosts through it) and a ``SecretBox`` (signing secrets are only ever
held sealed).
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
from services.notification.domain.api_keys import ApiKey
from services.notification.domain.egress import IPAddress
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
    sealed_secret: str
    """The signing secret sealed with ``SecretBox``: stored so, never in clear."""
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
class NewApiKey:
    """A key of the status API as stored: its digest, never the key."""

    key_id: str
    name: str
    digest: str
    channels: tuple[str, ...]
    role: str = "viewer"


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
        """Add it, or replace the one with its id (re-activating it; a secret still in its grace
        window is forgotten)."""
        ...

    async def rotate_secret(self, subscription_id: str, sealed_secret: str, previous_until: datetime) -> bool:
        """Sign with ``sealed_secret`` from now on, and with the secret it replaces as well until
        ``previous_until``; False when there is no such subscription."""
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


class ApiKeys(Protocol):
    async def add(self, key: NewApiKey) -> None:
        """Add it; a key id (or digest) already known, active or revoked, is left as it is."""
        ...

    async def revoke(self, key_id: str) -> bool:
        """Revoke it for good (again is fine); False when no key of that id was ever added."""
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

    @property
    def api_keys(self) -> ApiKeys: ...


# What the delivery worker works from.


@dataclass(frozen=True)
class DueDelivery:
    """A claimed delivery: leased to this worker until its attempt is recorded (or the lease ends)."""

    delivery_id: str
    subscription_id: str
    url: str
    secrets: tuple[str, ...]
    """The sealed secrets to sign with now: the current one first, then one still in its grace window."""
    body: bytes
    attempts: int
    """Attempts ever made."""
    round_attempts: int
    """Attempts since it was last (re)queued: the budget ``webhook_max_attempts`` counts these."""


@dataclass(frozen=True)
class PostOutcome:
    """What one POST came to: the HTTP status, or why there was none as one of the generic classes
    `egress_refused`, `dns`, `refused`, `timeout`, `tls`, `connection` — never an address, a port
    or an exception's text, which would tell a subscriber what listens inside the network."""

    status_code: int | None
    transport_error: str | None
    duration_ms: int


@dataclass(frozen=True)
class Attempt:
    """One attempt as recorded: ``error`` is None when it was delivered, otherwise a generic class
    (those of ``PostOutcome``, `redirect`, `http_4xx`, `http_5xx`, ...): subscribers read it."""

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
    order_id: UUID | None = None
    """The order it is about (its send is traced in the order's trace)."""


class MailSender(Protocol):
    async def send(self, mails: Sequence[Mail]) -> list[str | None]:
        """Send each one; per mail, in order, None when the server accepted it or why it did not."""
        ...


class WebhookSender(Protocol):
    async def post(self, url: str, secrets: Sequence[str], webhook_id: str, body: bytes) -> PostOutcome:
        """One POST of ``body`` signed the Standard Webhooks way under ``webhook_id``, once per
        secret (``webhook-signature: v1,<a> v1,<b>``); never to an address the egress guard
        refuses, and never following a redirect."""
        ...


class Unresolvable(Exception):
    """A host has no address, or its lookup failed: the message says which, in general terms."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        """Every address ``host`` has now; raises ``Unresolvable`` when there is none."""
        ...


class SecretBox(Protocol):
    """Seals and opens webhook signing secrets (the key is in ``BATON_WEBHOOK_SECRETS_KEY``)."""

    def seal(self, secret: str) -> str: ...

    def open(self, sealed: str) -> str | None:
        """The secret, or None when it was not sealed with this box's keys (or was tampered with)."""
        ...


class OrderStatusQueries(Protocol):
    """What the status API reads."""

    async def order(self, order_id: UUID) -> dict[str, Any] | None:
        """The order's view as JSON-ready data: status, shipments with stage, ETA, timeline."""
        ...

    async def find(self, channel: str, external_id: str) -> UUID | None: ...

    async def api_key(self, digest: str) -> ApiKey | None:
        """The active key with this digest; None for an unknown or revoked one."""
        ...

    async def ready(self) -> bool: ...
