"""Notification's ports in memory: the use cases and the delivery worker run without PostgreSQL,
HTTP or SMTP, in milliseconds. Time is ``FakeNotificationStore.now`` (seconds), moved by the tests."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address
from uuid import UUID

from libs.contracts.privacy import ERASED, ERASED_EMAIL, Erasure, ErasureRequested, customer_digest
from libs.platform.messaging import Outgoing
from services.notification.app.ports import (
    AfterAttempt,
    Attempt,
    Contact,
    Dead,
    Delivered,
    DueDelivery,
    DueEmail,
    EmailResult,
    Mail,
    NewApiKey,
    NewDelivery,
    NewEmail,
    NewSubscription,
    PostOutcome,
    Retry,
    Subscriber,
    TimelineEntry,
    Unresolvable,
)
from services.notification.domain.egress import IPAddress
from services.notification.domain.read_model import OrderView, ShipmentStage, fold_stage, fold_status
from tests.unit.fakes.erasures import FakeErasureLedger


@dataclass
class FakeSubscription:
    url: str
    sealed_secret: str
    events: tuple[str, ...]
    active: bool = True
    previous_secret: str | None = None
    previous_until: datetime | None = None


@dataclass
class FakeDelivery:
    subscription_id: str
    event_key: str
    body: bytes
    seq: int
    next_attempt_at: float
    status: str = "pending"
    attempts: int = 0
    round_attempts: int = 0
    last_error: str | None = None


@dataclass
class FakeEmail:
    context: Mapping[str, str]
    next_attempt_at: float
    state: str = "pending"
    attempts: int = 0
    last_error: str | None = None


@dataclass
class FakeNotificationStore:
    """Notification's tables as dictionaries, with the rules the SQL applies."""

    now: float = 0.0
    """Seconds since the epoch (UTC)."""
    subscriptions: dict[str, FakeSubscription] = field(default_factory=dict)
    deliveries: dict[str, FakeDelivery] = field(default_factory=dict)
    attempts: list[tuple[str, int, int | None, str | None]] = field(default_factory=list)
    outbox: list[Outgoing] = field(default_factory=list)
    customers: dict[UUID, Contact] = field(default_factory=dict)
    emails: dict[tuple[UUID, str], FakeEmail] = field(default_factory=dict)
    views: dict[UUID, OrderView] = field(default_factory=dict)
    stages: dict[str, ShipmentStage] = field(default_factory=dict)
    timeline: list[TimelineEntry] = field(default_factory=list)
    ledger: FakeErasureLedger = field(default_factory=FakeErasureLedger)
    api_keys: dict[str, FakeApiKey] = field(default_factory=dict)

    def unit(self) -> FakeNotificationUnit:
        return FakeNotificationUnit(self)

    def deliveries_of(self, subscription_id: str, status: str | None = None) -> list[FakeDelivery]:
        return [
            d
            for d in self.deliveries.values()
            if d.subscription_id == subscription_id and (status is None or d.status == status)
        ]


class FakeNotificationUnit:
    """Implements ``NotificationUnit`` on a ``FakeNotificationStore``."""

    def __init__(self, store: FakeNotificationStore) -> None:
        self.subscriptions = FakeSubscriptions(store)
        self.deliveries = FakeDeliveries(store)
        self.emails = FakeEmails(store)
        self.customers = FakeCustomers(store)
        self.read_model = FakeReadModel(store)
        self.erasures = store.ledger
        self.api_keys = FakeApiKeys(store)


@dataclass
class FakeApiKey:
    name: str
    digest: str
    channels: tuple[str, ...]
    role: str = "viewer"
    revoked: bool = False


class FakeApiKeys:
    def __init__(self, store: FakeNotificationStore) -> None:
        self._store = store

    async def add(self, key: NewApiKey) -> None:
        keys = self._store.api_keys
        if key.key_id not in keys and all(k.digest != key.digest for k in keys.values()):
            keys[key.key_id] = FakeApiKey(key.name, key.digest, key.channels, key.role)

    async def revoke(self, key_id: str) -> bool:
        if key_id not in self._store.api_keys:
            return False
        self._store.api_keys[key_id].revoked = True
        return True


class FakeSubscriptions:
    def __init__(self, store: FakeNotificationStore) -> None:
        self._store = store

    async def active(self) -> list[Subscriber]:
        return [
            Subscriber(sid, frozenset(s.events)) for sid, s in self._store.subscriptions.items() if s.active
        ]

    async def add(self, subscription: NewSubscription) -> None:
        self._store.subscriptions[subscription.subscription_id] = FakeSubscription(
            subscription.url, subscription.sealed_secret, subscription.events
        )

    async def rotate_secret(self, subscription_id: str, sealed_secret: str, previous_until: datetime) -> bool:
        subscription = self._store.subscriptions.get(subscription_id)
        if subscription is None:
            return False
        subscription.previous_secret, subscription.previous_until = subscription.sealed_secret, previous_until
        subscription.sealed_secret = sealed_secret
        return True

    async def deactivate(self, subscription_id: str) -> None:
        if subscription_id in self._store.subscriptions:
            self._store.subscriptions[subscription_id].active = False


class FakeDeliveries:
    def __init__(self, store: FakeNotificationStore) -> None:
        self._store = store

    async def add(self, deliveries: Sequence[NewDelivery]) -> None:
        for d in deliveries:
            self._store.deliveries.setdefault(
                d.delivery_id,
                FakeDelivery(
                    d.subscription_id, d.event_key, d.body, len(self._store.deliveries), self._store.now
                ),
            )

    async def cancel_pending(self, subscription_id: str, reason: str) -> None:
        for d in self._store.deliveries_of(subscription_id, "pending"):
            d.status, d.last_error = "cancelled", reason

    async def redeliver(self, delivery_id: str | None, subscription_id: str | None) -> None:
        for key, d in self._store.deliveries.items():
            if d.status == "dead" and (key == delivery_id or d.subscription_id == subscription_id):
                d.status, d.next_attempt_at, d.round_attempts = "pending", self._store.now, 0


class FakeEmails:
    def __init__(self, store: FakeNotificationStore) -> None:
        self._store = store

    async def add(self, emails: Sequence[NewEmail]) -> None:
        for e in emails:
            contact = self._store.customers.get(e.order_id)
            if contact is None or not contact.erased:
                self._store.emails.setdefault((e.order_id, e.status), FakeEmail(e.context, self._store.now))

    async def forget(self, order_ids: Sequence[UUID]) -> int:
        changed = 0
        for (order_id, _), email in self._store.emails.items():
            if order_id in order_ids and (email.state == "pending" or email.last_error is not None):
                email.state = "cancelled" if email.state == "pending" else email.state
                email.last_error = None
                changed += 1
        return changed


class FakeCustomers:
    def __init__(self, store: FakeNotificationStore) -> None:
        self._store = store

    async def remember(self, contacts: Sequence[Contact]) -> None:
        for c in contacts:
            self._store.customers.setdefault(c.order_id, c)

    async def erase(self, request: ErasureRequested) -> list[UUID]:
        erasure = Erasure.of(request)
        erased = [
            order_id
            for order_id, c in self._store.customers.items()
            if c.customer_id is not None
            and customer_digest(c.customer_id) == erasure.customer_digest
            and request.channel in (None, c.channel)
            and c.placed_at is not None
            and c.placed_at < request.requested_at
        ]
        for order_id in erased:
            self._store.customers[order_id] = dataclasses.replace(
                self._store.customers[order_id],
                email=ERASED_EMAIL,
                name=ERASED,
                customer_id=None,
                erased=True,
            )
        return erased


class FakeReadModel:
    def __init__(self, store: FakeNotificationStore) -> None:
        self._store = store

    async def record_statuses(self, views: Sequence[OrderView], timeline: Sequence[TimelineEntry]) -> None:
        for view in views:
            self._store.views[view.order_id] = fold_status(self._store.views.get(view.order_id), view)
        self._store.timeline += timeline

    async def record_stages(self, stages: Sequence[ShipmentStage], timeline: Sequence[TimelineEntry]) -> None:
        for stage in stages:
            self._store.stages[stage.shipment_id] = fold_stage(
                self._store.stages.get(stage.shipment_id), stage
            )
        self._store.timeline += timeline


class FakeDeliveryQueue:
    """Implements ``DeliveryQueue`` with the claiming rule of the SQL: per active subscription, its
    own oldest due pending deliveries up to its free slots, leased by pushing them into the future."""

    def __init__(self, store: FakeNotificationStore) -> None:
        self._store = store
        self.claims: list[list[str]] = []

    async def claim(self, slots: int, busy: Mapping[str, int], lease_s: float) -> list[DueDelivery]:
        store = self._store
        claimed = []
        for sid, subscription in store.subscriptions.items():
            if not subscription.active:
                continue
            due = sorted(
                (
                    (d.next_attempt_at, d.seq, key, d)
                    for key, d in store.deliveries.items()
                    if d.subscription_id == sid and d.status == "pending" and d.next_attempt_at <= store.now
                ),
                key=lambda t: (t[0], t[1]),
            )[: max(slots - busy.get(sid, 0), 0)]
            secrets: tuple[str, ...] = (subscription.sealed_secret,)
            until = subscription.previous_until
            if subscription.previous_secret and until and until > datetime.fromtimestamp(store.now, UTC):
                secrets += (subscription.previous_secret,)
            for _, _, key, d in due:
                d.next_attempt_at = store.now + lease_s
                claimed.append(
                    DueDelivery(key, sid, subscription.url, secrets, d.body, d.attempts, d.round_attempts)
                )
        self.claims.append([d.delivery_id for d in claimed])
        return claimed

    async def record(self, due: DueDelivery, attempt: Attempt, then: AfterAttempt) -> bool:
        store = self._store
        d = store.deliveries[due.delivery_id]
        d.attempts += 1
        d.round_attempts = due.round_attempts + 1
        d.last_error = attempt.error
        store.attempts.append((due.delivery_id, d.attempts, attempt.status_code, attempt.error))
        if d.status != "pending":
            return False
        if isinstance(then, Delivered):
            d.status = "delivered"
        elif isinstance(then, Retry):
            d.next_attempt_at = store.now + then.delay_s
        else:
            assert isinstance(then, Dead)
            d.status = "dead"
            store.outbox.append(then.dead_letter)
        return True


@dataclass
class FakeEmailRound:
    store: FakeNotificationStore
    due: list[DueEmail]

    async def record(self, results: Sequence[EmailResult]) -> None:
        for r in results:
            email = self.store.emails[(r.order_id, r.status)]
            email.attempts += 1
            email.last_error = r.error or email.last_error
            if r.state == "retry":
                email.next_attempt_at = self.store.now + r.retry_in_s
            else:
                email.state = r.state


class FakeEmailQueue:
    """Implements ``EmailQueue``: due e-mails whose customer is known, oldest due first."""

    def __init__(self, store: FakeNotificationStore) -> None:
        self._store = store

    @asynccontextmanager
    async def round(self, limit: int) -> AsyncIterator[FakeEmailRound]:
        store = self._store
        due = sorted(
            (
                (e.next_attempt_at, order_id, status, e)
                for (order_id, status), e in store.emails.items()
                if e.state == "pending"
                and e.next_attempt_at <= store.now
                and order_id in store.customers
                and not store.customers[order_id].erased
            ),
            key=lambda t: t[0],
        )[:limit]
        yield FakeEmailRound(
            store,
            [
                DueEmail(
                    order_id,
                    status,
                    e.attempts,
                    store.customers[order_id].email,
                    store.customers[order_id].name,
                    store.customers[order_id].external_id,
                    e.context,
                )
                for _, order_id, status, e in due
            ],
        )


@dataclass
class FakeWebhookSender:
    """Answers per URL: a list of status codes (or transport errors) used in turn, the last one
    for ever after; a URL in ``hanging`` answers only once ``release`` is set."""

    answers: dict[str, list[int | str]] = field(default_factory=dict)
    hanging: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    posts: list[tuple[str, str, bytes]] = field(default_factory=list)
    signed_with: list[list[str]] = field(default_factory=list)

    async def post(self, url: str, secrets: Sequence[str], webhook_id: str, body: bytes) -> PostOutcome:
        self.posts.append((url, webhook_id, body))
        self.signed_with.append(list(secrets))
        if url in self.hanging:
            await self.release.wait()
        answers = self.answers.get(url, [204])
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, str):
            return PostOutcome(None, answer, 1)
        return PostOutcome(answer, None, 1)

    def posted_to(self, url: str) -> list[str]:
        return [webhook_id for u, webhook_id, _ in self.posts if u == url]


@dataclass
class FakeMailSender:
    """Accepts every mail except those to ``refused`` recipients."""

    refused: set[str] = field(default_factory=set)
    sent: list[Mail] = field(default_factory=list)

    async def send(self, mails: Sequence[Mail]) -> list[str | None]:
        results: list[str | None] = []
        for mail in mails:
            if mail.recipient in self.refused:
                results.append(f"SMTPRecipientsRefused: 550 {mail.recipient} unknown")
            else:
                self.sent.append(mail)
                results.append(None)
        return results


@dataclass
class FakeResolver:
    """Implements ``Resolver`` from a table: host -> the answers it gives in turn (the last one
    for ever after); a host not in the table does not resolve."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        self.asked.append(host)
        turns = self.answers.get(host.removesuffix("."))
        if not turns:
            raise Unresolvable("the name does not resolve")
        answer = turns.pop(0) if len(turns) > 1 else turns[0]
        return [ip_address(a) for a in answer]
