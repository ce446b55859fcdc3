"""Notification's use cases: keep subscriptions and customer contacts, and record what each public
event causes — webhook deliveries per subscriber, one customer e-mail per (order, status), the
status API's read model and timeline. Sending happens later, in the delivery worker.

Each takes contract objects and a unit of work; it never sees a topic, a header or a connection.
Notification emits no events: a record it cannot apply is rejected (and dead-lettered by the router).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

from libs.contracts.envelope import Event
from libs.contracts.fulfillment import StageChanged
from libs.contracts.lifecycle import OrderReceived
from libs.contracts.notification import ApiKeyChanged, RedeliveryRequested, WebhookSubscriptionChanged
from libs.contracts.orders import OrderStatusChanged
from libs.contracts.privacy import Erasure, ErasureRequested, customers_of, kept
from libs.contracts.returns import ReturnStatusChanged
from libs.contracts.sla import SlaBreached
from libs.platform.erasures import Erased, applied
from libs.platform.records import Rejected
from services.notification.app.egress import EgressGuard
from services.notification.app.ports import (
    Contact,
    NewApiKey,
    NewDelivery,
    NewEmail,
    NewSubscription,
    NotificationUnit,
    SecretBox,
    Subscriber,
    TimelineEntry,
)
from services.notification.domain import emails, webhooks
from services.notification.domain.egress import Refused
from services.notification.domain.read_model import (
    OrderView,
    ShipmentStage,
    fold_stage,
    fold_status,
    stage_after,
)


async def change_subscription(
    command: WebhookSubscriptionChanged, uow: NotificationUnit, guard: EgressGuard, box: SecretBox
) -> list[Event]:
    """Add (or replace) a subscription, rotate its signing secret, or remove it.

    Adding checks the URL with the egress guard (as every send does again: DNS may change) and
    the secret, so a bad one is dead-lettered once with its cause instead of failing every
    delivery: `webhook_url_refused`, `webhook_secret_refused`. A host that does not resolve yet is
    accepted. Removing stops the subscription and cancels its pending deliveries: a removed endpoint
    gets nothing more."""
    if command.action == "remove":
        await uow.subscriptions.deactivate(command.subscription_id)
        await uow.deliveries.cancel_pending(command.subscription_id, "subscription removed")
        return []
    if command.action == "rotate_secret":
        sealed = accepted_secret(command, box)
        until = command.sent_at + timedelta(hours=command.grace_hours)
        if not await uow.subscriptions.rotate_secret(command.subscription_id, sealed, until):
            raise Rejected("unknown_subscription", f"no subscription {command.subscription_id} to rotate")
        return []
    if problem := webhooks.subscription_problem(command.url, command.events):
        raise Rejected("schema_violation", problem)
    assert command.url is not None
    verdict = await guard.check(command.url)
    if isinstance(verdict, Refused):
        raise Rejected("webhook_url_refused", str(verdict))
    sealed = accepted_secret(command, box)
    await uow.subscriptions.add(
        NewSubscription(command.subscription_id, command.url, sealed, tuple(command.events))
    )
    return []


def accepted_secret(command: WebhookSubscriptionChanged, box: SecretBox) -> str:
    """The command's signing secret, checked and sealed under the current key; a clear secret on
    the topic, one that does not open, or a weak one is refused (the detail never shows it)."""
    if command.secret is not None:
        raise Rejected(
            "webhook_secret_refused",
            "a clear secret is refused: send it sealed in secret_ciphertext (`baton webhooks add` does)",
        )
    if not command.secret_ciphertext:
        raise Rejected("webhook_secret_refused", "secret_ciphertext is missing")
    secret = box.open(command.secret_ciphertext)
    if secret is None:
        raise Rejected(
            "webhook_secret_refused",
            "secret_ciphertext does not open with BATON_WEBHOOK_SECRETS_KEY (sealed with another key?)",
        )
    if problem := webhooks.secret_problem(secret):
        raise Rejected("webhook_secret_refused", problem)
    return box.seal(secret)


async def redeliver(request: RedeliveryRequested, uow: NotificationUnit) -> list[Event]:
    """Dead deliveries are sent again with a fresh attempt budget; earlier attempts stay recorded."""
    if request.delivery_id is None and request.subscription_id is None:
        raise Rejected("schema_violation", "name a delivery_id or a subscription_id")
    await uow.deliveries.redeliver(request.delivery_id, request.subscription_id)
    return []


async def change_api_key(command: ApiKeyChanged, uow: NotificationUnit) -> list[Event]:
    """Add a status API key (its digest) or revoke one for good; a revoked key id never comes back."""
    if command.action == "revoke":
        if not await uow.api_keys.revoke(command.key_id):
            raise Rejected("unknown_api_key", f"no key {command.key_id!r} was ever added")
        return []
    assert command.key_hash is not None
    await uow.api_keys.add(
        NewApiKey(command.key_id, command.name, command.key_hash, tuple(command.channels), command.role)
    )
    return []


async def remember_customers(received: Sequence[OrderReceived], uow: NotificationUnit) -> list[list[Event]]:
    """Where to write to each order's customer: status events do not carry personal data.

    The contact of an order placed before an erasure of its customer that arrives after it is kept
    erased, and the order's e-mails (queued already, or to come) are never sent."""
    erasures = await uow.erasures.covering(customers_of(fact.order for fact in received))
    contacts = [contact_of(fact, erasures) for fact in received]
    await uow.customers.remember(contacts)
    if erased := [c.order_id for c in contacts if c.erased]:
        await uow.emails.forget(erased)
    return [[] for _ in received]


def contact_of(fact: OrderReceived, erasures: Sequence[Erasure]) -> Contact:
    """The order's contact; one an erasure covers holds the erased markers and no customer id."""
    order = kept(fact.order, erasures)
    erased = order is not fact.order
    return Contact(
        fact.order_id,
        order.customer.email,
        order.customer.name,
        order.external_id,
        channel=order.channel,
        customer_id=None if erased else order.customer.id,
        placed_at=order.placed_at,
        erased=erased,
    )


async def erase_customer(request: ErasureRequested, uow: NotificationUnit) -> list[Event]:
    """Erase the contacts of the customer's orders placed before the request and never send their
    e-mails, once per request id; the status API's views and timelines never held personal data.
    Reports what it changed."""
    if not await uow.erasures.claim(Erasure.of(request)):
        return []
    orders = await uow.customers.erase(request)
    emails = await uow.emails.forget(orders) if orders else 0
    erased = Erased(len(orders), len(orders) + emails)
    await uow.erasures.record(request.request_id, erased)
    return [applied(request, "notification", erased)]


def fan_out(
    subscribers: Sequence[Subscriber], event_key: str, source_id: str, event: Event, data: bytes
) -> list[NewDelivery]:
    """One delivery per subscriber that wants ``event_key``, the body built once."""
    targets = [s.subscription_id for s in subscribers if webhooks.wants(s.events, event_key)]
    if not targets:
        return []
    body = webhooks.payload(event_key, event.occurred_at, data)
    return [NewDelivery(webhooks.delivery_id(sid, source_id), sid, event_key, body) for sid in targets]


async def record_status_changes(
    changes: Sequence[OrderStatusChanged], uow: NotificationUnit
) -> list[list[Event]]:
    """Webhooks, e-mails, read model and timeline for a batch of status events, set-based.

    Several events of one order in a batch are folded first, as applying them one by one would: the
    highest version wins, the ETA and shipments are the latest given."""
    subscribers = await uow.subscriptions.active()
    deliveries: list[NewDelivery] = []
    to_send: list[NewEmail] = []
    timeline: list[TimelineEntry] = []
    views: dict[UUID, OrderView] = {}
    for change in changes:
        data = change.model_dump_json()
        deliveries += fan_out(
            subscribers, webhooks.status_key(change.status), str(change.event_id), change, data.encode()
        )
        if change.status in emails.EMAIL_STATUSES:
            tracking = emails.tracking(s.tracking_number for s in change.shipments)
            why = emails.cancelled_because(r.code for r in change.reasons)
            context = {"tracking": tracking, "eta": emails.expected(change.eta)} | (
                {"why": why} if why else {}
            )
            to_send.append(NewEmail(change.order_id, change.status.value, context))
        timeline.append(TimelineEntry(change.order_id, "status", data, change.occurred_at))
        views[change.order_id] = fold_status(views.get(change.order_id), view_of(change))
    if deliveries:
        await uow.deliveries.add(deliveries)
    if to_send:
        await uow.emails.add(to_send)
    if timeline:
        await uow.read_model.record_statuses(list(views.values()), timeline)
    return [[] for _ in changes]


def view_of(change: OrderStatusChanged) -> OrderView:
    return OrderView(
        order_id=change.order_id,
        channel=change.channel,
        external_id=change.external_id,
        status=change.status.value,
        version=change.version,
        eta=change.eta,
        shipments=[s.model_dump(mode="json") for s in change.shipments],
        updated_at=change.occurred_at,
    )


async def record_stage_changes(changes: Sequence[StageChanged], uow: NotificationUnit) -> list[list[Event]]:
    """Webhooks (`stage.entered:<stage>`, `stage.left:<stage>`), each parcel's stage and the timeline
    for a batch of stage events, set-based; a parcel's changes in one batch are folded in order."""
    subscribers = await uow.subscriptions.active()
    deliveries: list[NewDelivery] = []
    timeline: list[TimelineEntry] = []
    stages: dict[str, ShipmentStage] = {}
    for change in changes:
        data = change.model_dump_json()
        for event_key, suffix in webhooks.stage_keys(change.entered_stage, change.left_stage):
            deliveries += fan_out(
                subscribers, event_key, f"{change.event_id}/{suffix}", change, data.encode()
            )
        timeline.append(TimelineEntry(change.order_id, "stage", data, change.occurred_at))
        stage = ShipmentStage(
            shipment_id=change.shipment_id,
            order_id=change.order_id,
            pipeline=change.pipeline,
            stage=stage_after(change.change, change.entered_stage),
            updated_at=change.occurred_at,
        )
        stages[change.shipment_id] = fold_stage(stages.get(change.shipment_id), stage)
    if deliveries:
        await uow.deliveries.add(deliveries)
    if timeline:
        await uow.read_model.record_stages(list(stages.values()), timeline)
    return [[] for _ in changes]


async def record_return_changes(
    changes: Sequence[ReturnStatusChanged], uow: NotificationUnit
) -> list[list[Event]]:
    """The customer's e-mails about returns, set-based: one when a return is authorized, one when it
    was received and its refund requested (each once per return, whatever is redelivered)."""
    to_send: list[NewEmail] = []
    for change in changes:
        key = emails.return_email(change.status.value, change.return_id)
        if key is None:
            continue
        lines = change.received or change.lines
        context = {
            "return_id": change.return_id,
            "units": ", ".join(f"{line.quantity} x {line.sku}" for line in lines),
            "refund": "" if change.refund is None else format(change.refund, "f"),
            "currency": change.currency or "",
        }
        to_send.append(NewEmail(change.order_id, key, context))
    if to_send:
        await uow.emails.add(to_send)
    return [[] for _ in changes]


async def record_sla_breaches(breaches: Sequence[SlaBreached], uow: NotificationUnit) -> list[list[Event]]:
    """`shipment.late` webhooks for a batch of SLA breaches, set-based (the re-computed ETA reaches
    the status API and the `order.<status>` webhooks with the order's re-published status)."""
    subscribers = await uow.subscriptions.active()
    deliveries: list[NewDelivery] = []
    for breach in breaches:
        data = breach.model_dump_json().encode()
        deliveries += fan_out(subscribers, webhooks.SHIPMENT_LATE, str(breach.event_id), breach, data)
    if deliveries:
        await uow.deliveries.add(deliveries)
    return [[] for _ in breaches]
