"""Notification's use cases on in-memory ports: what each input records, without Kafka or PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest

from libs.contracts.fulfillment import StageChanged
from libs.contracts.lifecycle import OrderReceived
from libs.contracts.notification import RedeliveryRequested, WebhookSubscriptionChanged
from libs.contracts.orders import OrderDetails, OrderStatusChanged, Shipment, ShipmentLine
from libs.contracts.privacy import ERASED, ERASED_EMAIL, ErasureApplied, ErasureRequested
from libs.contracts.returns import ReceivedLine, ReturnLine, ReturnStatusChanged
from libs.contracts.sla import SlaBreached
from libs.contracts.vocabulary import OrderStatus, ReturnCondition, ReturnStatus
from libs.platform.messaging import Rejected
from libs.platform.secret_box import SecretBox, new_key, new_webhook_secret
from services.notification.app.egress import EgressGuard
from services.notification.app.use_cases import (
    change_subscription,
    erase_customer,
    record_return_changes,
    record_sla_breaches,
    record_stage_changes,
    record_status_changes,
    redeliver,
    remember_customers,
)
from services.notification.domain import emails
from services.notification.domain.egress import EgressPolicy
from services.notification.entry import build_router
from services.notification.settings import NotificationSettings
from tests.support.orders import erasure_request, order
from tests.unit.fakes.notification import FakeNotificationStore, FakeResolver

pytestmark = pytest.mark.unit

SECRET = new_webhook_secret()
BOX = SecretBox(new_key())
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def status(
    order_id: UUID,
    value: OrderStatus,
    version: int,
    *,
    tracking: list[str | None] | None = None,
    eta: datetime | None = None,
) -> OrderStatusChanged:
    shipments = [
        Shipment(
            shipment_id=f"{order_id}-{i}",
            location_id="wh",
            lines=[ShipmentLine(sku="MUG", quantity=1)],
            tracking_number=number,
        )
        for i, number in enumerate(tracking or [])
    ]
    return OrderStatusChanged(
        order_id=order_id,
        channel="webshop",
        external_id=f"ext-{order_id.hex[:6]}",
        status=value,
        version=version,
        shipments=shipments,
        eta=eta,
        occurred_at=T0 + timedelta(minutes=version),
    )


def stage(
    order_id: UUID, shipment_id: str, change: str, entered: str | None, left: str | None
) -> StageChanged:
    return StageChanged(
        order_id=order_id,
        shipment_id=shipment_id,
        pipeline="standard",
        entered_stage=entered,
        left_stage=left,
        change=change,  # type: ignore[arg-type]
    )


def guard() -> EgressGuard:
    """The egress guard with the default policy; `example.test` resolves to a public address,
    `db.internal` to a private one."""
    return EgressGuard(
        EgressPolicy(),
        FakeResolver({"example.test": [["93.184.216.34"]], "db.internal": [["93.184.216.34", "10.1.2.3"]]}),
    )


async def change(command: WebhookSubscriptionChanged, store: FakeNotificationStore) -> list[Any]:
    return await change_subscription(command, store.unit(), guard(), BOX)


def adding(subscription_id: str = "s", **fields: Any) -> WebhookSubscriptionChanged:
    return WebhookSubscriptionChanged.model_validate(
        {
            "action": "add",
            "subscription_id": subscription_id,
            "url": f"https://example.test/{subscription_id}",
            "secret_ciphertext": BOX.seal(SECRET),
            "events": ["*"],
        }
        | fields
    )


async def subscribe(store: FakeNotificationStore, subscription_id: str, *events: str) -> None:
    assert await change(adding(subscription_id, events=list(events)), store) == []


def keys(store: FakeNotificationStore, subscription_id: str) -> list[str]:
    return sorted(d.event_key for d in store.deliveries_of(subscription_id))


async def test_each_subscriber_gets_exactly_the_events_its_filter_names() -> None:
    store = FakeNotificationStore()
    await subscribe(store, "everything", "*")
    await subscribe(store, "shipping", "order.shipped")
    await subscribe(store, "packing", "stage.entered:packed")
    order_id = uuid4()

    await record_status_changes(
        [
            status(order_id, OrderStatus.RECEIVED, 1),
            status(order_id, OrderStatus.SHIPPED, 2, tracking=["1Z"]),
        ],
        store.unit(),
    )
    await record_stage_changes([stage(order_id, "s1", "moved", "packed", "new")], store.unit())

    assert keys(store, "everything") == [
        "order.received",
        "order.shipped",
        "stage.entered:packed",
        "stage.left:new",
    ]
    assert keys(store, "shipping") == ["order.shipped"]
    assert keys(store, "packing") == ["stage.entered:packed"]


async def test_a_delivery_carries_the_event_and_a_redelivered_event_adds_no_second_one() -> None:
    store = FakeNotificationStore()
    await subscribe(store, "everything", "*")
    shipped = status(uuid4(), OrderStatus.SHIPPED, 1, tracking=["1Z"])

    await record_status_changes([shipped], store.unit())
    await record_status_changes([shipped], store.unit())

    [delivery] = store.deliveries.values()
    body = orjson.loads(delivery.body)
    assert body["type"] == "order.shipped"
    assert body["timestamp"] == shipped.occurred_at.isoformat()
    assert body["data"] == orjson.loads(shipped.model_dump_json())


async def test_subscribers_with_no_wanted_event_cost_no_delivery() -> None:
    store = FakeNotificationStore()
    await subscribe(store, "shipping", "order.shipped")
    await record_status_changes([status(uuid4(), OrderStatus.VALIDATED, 2)], store.unit())
    assert store.deliveries == {}


async def test_a_removed_subscription_gets_nothing_more_and_its_pending_deliveries_are_cancelled() -> None:
    store = FakeNotificationStore()
    await subscribe(store, "gone", "*")
    await record_status_changes([status(uuid4(), OrderStatus.RECEIVED, 1)], store.unit())

    await change(WebhookSubscriptionChanged(action="remove", subscription_id="gone"), store)
    await record_status_changes([status(uuid4(), OrderStatus.RECEIVED, 1)], store.unit())

    assert [(d.status, d.last_error) for d in store.deliveries_of("gone")] == [
        ("cancelled", "subscription removed")
    ]


@pytest.mark.parametrize(
    ("fields", "cause", "problem"),
    [
        ({"url": None}, "schema_violation", "needs url, secret and events"),
        ({"events": []}, "schema_violation", "needs url, secret and events"),
        ({"url": "ftp://example.test/hook"}, "webhook_url_refused", "scheme"),
        ({"url": "https://10.0.0.1/hook"}, "webhook_url_refused", "private"),
        ({"url": "https://db.internal/hook"}, "webhook_url_refused", "private"),
        ({"url": "http://example.test/hook"}, "webhook_url_refused", "http_not_allowed"),
        ({"url": "https://admin@example.test/"}, "webhook_url_refused", "userinfo"),
        (
            {"secret": SECRET, "secret_ciphertext": None},
            "webhook_secret_refused",
            "a clear secret is refused",
        ),
        ({"secret_ciphertext": None}, "webhook_secret_refused", "secret_ciphertext is missing"),
        ({"secret_ciphertext": "not-a-token"}, "webhook_secret_refused", "does not open"),
        (
            {"secret_ciphertext": SecretBox(new_key()).seal(SECRET)},
            "webhook_secret_refused",
            "does not open",
        ),
        (
            {"secret_ciphertext": BOX.seal("whsec_" + "A" * 20)},
            "webhook_secret_refused",
            "24 to 64 bytes, not 15",
        ),
        ({"secret_ciphertext": BOX.seal("s3cret-but-not-whsec-format")}, "webhook_secret_refused", "whsec_"),
        ({"secret_ciphertext": BOX.seal("whsec_not base64!")}, "webhook_secret_refused", "not base64"),
    ],
)
async def test_a_subscription_is_refused_with_its_cause_without_a_url_allowed_a_good_secret_or_events(
    fields: dict[str, Any], cause: str, problem: str
) -> None:
    store = FakeNotificationStore()
    with pytest.raises(Rejected) as rejected:
        await change(adding(**fields), store)
    assert rejected.value.cause == cause and problem in rejected.value.detail
    assert SECRET not in rejected.value.detail
    assert store.subscriptions == {}


async def test_a_subscription_keeps_its_secret_sealed_and_a_host_that_does_not_resolve_yet_is_accepted() -> (
    None
):
    store = FakeNotificationStore()
    await change(adding("later", url="https://not-yet.example.net/hook"), store)

    stored = store.subscriptions["later"]
    assert SECRET not in stored.sealed_secret and BOX.open(stored.sealed_secret) == SECRET


async def test_rotating_keeps_the_old_secret_for_the_grace_window_and_an_unknown_subscription_is_refused() -> (
    None
):
    store = FakeNotificationStore()
    await subscribe(store, "s", "*")
    new = new_webhook_secret()
    sent_at = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    rotate = WebhookSubscriptionChanged(
        action="rotate_secret",
        subscription_id="s",
        secret_ciphertext=BOX.seal(new),
        grace_hours=24,
        sent_at=sent_at,
    )

    await change(rotate, store)
    with pytest.raises(Rejected) as rejected:
        await change(rotate.model_copy(update={"subscription_id": "nobody"}), store)

    stored = store.subscriptions["s"]
    assert BOX.open(stored.sealed_secret) == new
    assert stored.previous_secret is not None and BOX.open(stored.previous_secret) == SECRET
    assert stored.previous_until == sent_at + timedelta(hours=24)
    assert rejected.value.cause == "unknown_subscription"


async def test_one_email_per_order_and_status_the_customer_hears_about_including_partially_shipped() -> None:
    store = FakeNotificationStore()
    order_id = uuid4()
    await record_status_changes(
        [
            status(order_id, OrderStatus.RECEIVED, 1),
            status(order_id, OrderStatus.VALIDATED, 2),
            status(order_id, OrderStatus.ALLOCATED, 3, tracking=[None, None]),
            status(order_id, OrderStatus.PARTIALLY_SHIPPED, 4, tracking=["1Z", None]),
        ],
        store.unit(),
    )
    await record_status_changes(
        [
            status(order_id, OrderStatus.PARTIALLY_SHIPPED, 4, tracking=["1Z", None]),  # redelivered
            status(order_id, OrderStatus.SHIPPED, 5, tracking=["1Z", "JJD1"], eta=T0 + timedelta(days=2)),
            status(order_id, OrderStatus.DELIVERED, 6),
        ],
        store.unit(),
    )

    assert {s: e.context for (_, s), e in store.emails.items()} == {
        "received": {"tracking": "to follow", "eta": "to follow"},
        "partially_shipped": {"tracking": "1Z", "eta": "to follow"},
        "shipped": {"tracking": "1Z, JJD1", "eta": "Monday, 30 November 2026"},
        "delivered": {"tracking": "to follow", "eta": "to follow"},
    }


async def test_the_read_model_keeps_the_highest_version_whatever_order_the_events_arrive_in() -> None:
    store = FakeNotificationStore()
    order_id = uuid4()
    eta = T0 + timedelta(days=2)

    await record_status_changes(
        [
            status(order_id, OrderStatus.RECEIVED, 1),
            status(order_id, OrderStatus.IN_FULFILLMENT, 4, tracking=[None], eta=eta),
            status(order_id, OrderStatus.SHIPPED, 5, tracking=["1Z"]),
            status(order_id, OrderStatus.ALLOCATED, 3, tracking=[None], eta=T0),  # late
        ],
        store.unit(),
    )
    await record_status_changes([status(order_id, OrderStatus.VALIDATED, 2)], store.unit())  # later still

    view = store.views[order_id]
    assert (view.status, view.version, view.eta) == ("shipped", 5, eta)
    assert [s["tracking_number"] for s in view.shipments] == ["1Z"]
    assert [orjson.loads(t.event)["version"] for t in store.timeline] == [1, 4, 5, 3, 2]


async def test_a_status_without_eta_or_shipments_keeps_the_known_ones_across_batches() -> None:
    store = FakeNotificationStore()
    order_id = uuid4()
    await record_status_changes(
        [status(order_id, OrderStatus.SHIPPED, 5, tracking=["1Z"], eta=T0)], store.unit()
    )
    await record_status_changes([status(order_id, OrderStatus.DELIVERED, 6)], store.unit())

    view = store.views[order_id]
    assert (view.status, view.eta, [s["tracking_number"] for s in view.shipments]) == (
        "delivered",
        T0,
        ["1Z"],
    )


async def test_a_parcel_shows_its_latest_stage_and_one_leaving_its_pipeline_stays_in_its_last() -> None:
    store = FakeNotificationStore()
    order_id = uuid4()
    await record_stage_changes(
        [
            stage(order_id, "s1", "entered", "new", None),
            stage(order_id, "s2", "entered", "new", None),
            stage(order_id, "s1", "moved", "packed", "new"),
        ],
        store.unit(),
    )
    await record_stage_changes([stage(order_id, "s1", "left", None, "packed")], store.unit())

    assert {s.shipment_id: s.stage for s in store.stages.values()} == {"s1": "packed", "s2": "new"}
    assert [t.kind for t in store.timeline] == ["stage"] * 4


async def test_where_to_write_is_the_first_contact_seen_for_an_order() -> None:
    store = FakeNotificationStore()
    details = OrderDetails.model_validate(order(lines=[("MUG", 1, "10.00")]))
    fact = OrderReceived(order_id=uuid4(), order=details)

    assert await remember_customers([fact, fact], store.unit()) == [[], []]

    contact = store.customers[fact.order_id]
    assert (contact.email, contact.name, contact.external_id) == (
        details.customer.email,
        details.customer.name,
        details.external_id,
    )


async def test_a_redelivery_request_names_a_delivery_or_a_subscription() -> None:
    store = FakeNotificationStore()
    with pytest.raises(Rejected) as rejected:
        await redeliver(RedeliveryRequested(), store.unit())
    assert rejected.value.cause == "schema_violation"


async def test_a_redelivery_request_queues_dead_deliveries_again_with_a_fresh_budget() -> None:
    store = FakeNotificationStore()
    await subscribe(store, "flaky", "*")
    await record_status_changes([status(uuid4(), OrderStatus.RECEIVED, 1)], store.unit())
    [delivery] = store.deliveries.values()
    delivery.status, delivery.attempts, delivery.round_attempts = "dead", 6, 6

    await redeliver(RedeliveryRequested(subscription_id="flaky"), store.unit())

    assert (delivery.status, delivery.attempts, delivery.round_attempts) == ("pending", 6, 0)


def test_the_router_has_a_handler_for_every_type_notification_reads() -> None:
    bound = build_router(NotificationSettings()).bind()
    assert {b.name for b in bound} == {
        "subscription_changed",
        "redelivery_requested",
        "api_key_changed",
        "order_facts",
        "status_changed",
        "stage_changed",
        "return_status_changed",
        "sla_breached",
        "erasure_requested",
    }


def return_changed(order_id: UUID, status: ReturnStatus, **fields: Any) -> ReturnStatusChanged:
    return ReturnStatusChanged(
        return_id="rma:1",
        order_id=order_id,
        status=status,
        lines=[ReturnLine(sku="A", quantity=2)],
        **fields,
    )


async def test_the_customer_hears_once_when_a_return_is_authorized_and_once_when_it_is_refunded() -> None:
    store = FakeNotificationStore()
    order_id = uuid4()
    received = return_changed(
        order_id,
        ReturnStatus.RECEIVED,
        received=[ReceivedLine(sku="A", quantity=1, condition=ReturnCondition.DAMAGED)],
        refund=Decimal("10.00"),
        currency="EUR",
    )
    changes = [
        return_changed(order_id, ReturnStatus.AUTHORIZED),
        return_changed(order_id, ReturnStatus.AUTHORIZED),
        return_changed(uuid4(), ReturnStatus.REFUSED),
        received,
    ]
    await record_return_changes(changes, store.unit())
    assert {s: e.context for (_, s), e in store.emails.items()} == {
        "return_authorized/rma:1": {"return_id": "rma:1", "units": "2 x A", "refund": "", "currency": ""},
        "return_refunded/rma:1": {
            "return_id": "rma:1",
            "units": "1 x A",
            "refund": "10.00",
            "currency": "EUR",
        },
    }
    assert emails.template_of("return_refunded/rma:1") == "return_refunded"
    assert emails.message_id(order_id, "return_refunded/rma:1").count(":") == 0


async def test_a_late_shipment_is_one_shipment_late_webhook_per_subscriber_that_names_it() -> None:
    store = FakeNotificationStore()
    await subscribe(store, "ops", "shipment.late")
    await subscribe(store, "shipping", "order.shipped")
    at = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    breach = SlaBreached(
        order_id=uuid4(),
        shipment_id="s1",
        pipeline="standard",
        stage="picking",
        sla_hours=24,
        stage_entered_at=at,
        due_at=at + timedelta(hours=24),
        overdue_seconds=90,
    )
    await record_sla_breaches([breach, breach], store.unit())  # redelivered: one delivery
    assert keys(store, "ops") == ["shipment.late"]
    assert keys(store, "shipping") == []
    [delivery] = store.deliveries_of("ops")
    assert orjson.loads(delivery.body)["data"]["shipment_id"] == "s1"


def received_from(customer: str, **fields: Any) -> OrderReceived:
    return OrderReceived(
        order_id=uuid4(), order=OrderDetails.model_validate(order(customer_id=customer) | fields)
    )


def erasure(customer: str = "c1", **fields: Any) -> ErasureRequested:
    return ErasureRequested.model_validate(erasure_request(customer, **fields))


async def test_an_erasure_erases_the_customers_contacts_and_their_emails_are_never_sent() -> None:
    store = FakeNotificationStore()
    mine, other = received_from("c1"), received_from("c2")
    await remember_customers([mine, other], store.unit())
    await record_status_changes([status(mine.order_id, OrderStatus.RECEIVED, 1)], store.unit())
    store.emails[(mine.order_id, "received")].last_error = "550 c1@example.com unknown"
    store.emails[(mine.order_id, "received")].state = "sent"
    await record_status_changes([status(mine.order_id, OrderStatus.BACKORDERED, 2)], store.unit())

    [report] = await erase_customer(erasure(request_id="er-1"), store.unit())

    assert isinstance(report, ErasureApplied)
    assert (report.service, report.orders, report.rows_changed) == ("notification", 1, 3)
    contact = store.customers[mine.order_id]
    assert (contact.email, contact.name, contact.customer_id, contact.erased) == (
        ERASED_EMAIL,
        ERASED,
        None,
        True,
    )
    assert contact.external_id == mine.order.external_id
    assert [
        (e.state, e.last_error) for (o, _), e in sorted(store.emails.items()) if o == mine.order_id
    ] == sorted([("sent", None), ("cancelled", None)])
    await record_status_changes([status(mine.order_id, OrderStatus.SHIPPED, 3)], store.unit())
    assert (mine.order_id, "shipped") not in store.emails, "no e-mail is queued for an erased contact"
    assert store.customers[other.order_id].email == other.order.customer.email
    assert await erase_customer(erasure(request_id="er-1"), store.unit()) == []


async def test_a_contact_placed_before_an_erasure_that_arrives_after_it_is_kept_erased_and_its_emails_cancelled() -> (
    None
):
    store = FakeNotificationStore()
    await erase_customer(erasure(), store.unit())
    late = received_from("c1")
    await record_status_changes([status(late.order_id, OrderStatus.RECEIVED, 1)], store.unit())

    await remember_customers([late], store.unit())

    contact = store.customers[late.order_id]
    assert (contact.email, contact.name, contact.erased) == (ERASED_EMAIL, ERASED, True)
    assert store.emails[(late.order_id, "received")].state == "cancelled"


async def test_an_erasure_keeps_contacts_of_orders_placed_after_it() -> None:
    store = FakeNotificationStore()
    later = received_from("c1", placed_at="2026-11-28T00:00:01Z")
    await remember_customers([later], store.unit())

    [report] = await erase_customer(erasure(), store.unit())

    assert isinstance(report, ErasureApplied) and report.orders == 0
    assert store.customers[later.order_id].email == later.order.customer.email
