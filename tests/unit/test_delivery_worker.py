"""The delivery worker on in-memory ports: fair webhook claiming, retries, dead letters, e-mail rounds."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from libs.contracts.notification import WebhookSubscriptionChanged
from libs.contracts.privacy import ErasureRequested
from libs.platform.messaging import Outgoing
from libs.platform.secret_box import SecretBox, new_key, new_webhook_secret
from services.notification.adapters.templates import PackageTemplates
from services.notification.app.delivery import DeliveryWorker, EmailPolicy, WebhookPolicy, webhook_lease_s
from services.notification.app.egress import EgressGuard
from services.notification.app.ports import Contact, NewDelivery, NewEmail, PostOutcome
from services.notification.app.use_cases import change_subscription, erase_customer
from services.notification.domain.egress import EgressPolicy
from services.notification.domain.webhooks import delivery_id
from tests.support.orders import erasure_request
from tests.unit.fakes.notification import (
    FakeDeliveryQueue,
    FakeEmailQueue,
    FakeMailSender,
    FakeNotificationStore,
    FakeResolver,
    FakeSubscription,
    FakeWebhookSender,
)

pytestmark = pytest.mark.unit

SLOTS = 4
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
DEAD_LETTERS = "notification.dead-letters.v1"


class Worker:
    """A delivery worker on a fake store, with what it sent and what it committed."""

    def __init__(
        self,
        *,
        max_attempts: int = 3,
        email_attempts: int = 3,
        round_size: int = 200,
        http: FakeWebhookSender | None = None,
    ) -> None:
        self.store = FakeNotificationStore()
        self.http = http or FakeWebhookSender()
        self.mail = FakeMailSender()
        self.queue = FakeDeliveryQueue(self.store)
        self.box = SecretBox(new_key())
        self.secret = new_webhook_secret()
        self.commits = 0
        self.worker = DeliveryWorker(
            deliveries=self.queue,
            webhooks=self.http,
            secrets=self.box,
            webhook_policy=WebhookPolicy(
                slots_per_subscription=SLOTS,
                max_attempts=max_attempts,
                backoff_base_s=1.0,
                backoff_cap_s=300.0,
                dead_letters=DEAD_LETTERS,
                rng=random.Random(7),
            ),
            emails=FakeEmailQueue(self.store),
            templates=PackageTemplates(),
            mail=self.mail,
            email_policy=EmailPolicy(
                sender="orders@baton.test", round_size=round_size, max_attempts=email_attempts
            ),
            committed=self.committed,
        )

    def committed(self) -> None:
        self.commits += 1

    def subscribe(self, subscription_id: str) -> str:
        url = f"https://example.test/{subscription_id}"
        self.store.subscriptions[subscription_id] = FakeSubscription(url, self.box.seal(self.secret), ("*",))
        return url

    async def queue_deliveries(self, subscription_id: str, n: int) -> list[str]:
        ids = [delivery_id(subscription_id, f"event-{self.store.now}-{i}") for i in range(n)]
        await self.store.unit().deliveries.add(
            [NewDelivery(i, subscription_id, "order.shipped", b'{"n": %d}' % n) for i in ids]
        )
        return ids

    async def claim_and_settle(self) -> int:
        claimed = await self.worker.claim_webhooks()
        await asyncio.sleep(0)
        await self.worker.settle(timeout_s=0.1)
        return claimed


async def test_a_subscriber_with_a_huge_backlog_never_starves_another() -> None:
    w = Worker()
    dead_end = w.subscribe("dead-end")
    w.http.hanging.add(dead_end)
    await w.queue_deliveries("dead-end", 1200)
    w.subscribe("healthy")
    [first] = await w.queue_deliveries("healthy", 1)

    await w.claim_and_settle()
    w.store.now += 1
    [second] = await w.queue_deliveries("healthy", 1)
    await w.claim_and_settle()

    assert w.http.posted_to("https://example.test/healthy") == [first, second]
    assert [d.status for d in w.store.deliveries_of("healthy")] == ["delivered", "delivered"]
    assert len(w.http.posted_to(dead_end)) == SLOTS, "the dead end holds its own slots, no more"
    assert [len(claim) for claim in w.queue.claims] == [SLOTS + 1, 1]
    w.http.release.set()
    await w.worker.settle()


async def test_each_subscription_gets_its_own_oldest_due_deliveries_first() -> None:
    w = Worker()
    w.subscribe("a")
    older = await w.queue_deliveries("a", 6)
    w.store.now += 1
    await w.queue_deliveries("a", 2)

    await w.claim_and_settle()

    assert w.queue.claims[0] == older[:SLOTS]


async def test_removing_a_subscription_cancels_its_pending_deliveries_and_one_in_flight_stays_cancelled() -> (
    None
):
    w = Worker()
    hanging = w.subscribe("gone")
    w.http.hanging.add(hanging)
    await w.queue_deliveries("gone", 10)
    await w.worker.claim_webhooks()
    await asyncio.sleep(0)

    await change_subscription(
        WebhookSubscriptionChanged(action="remove", subscription_id="gone"),
        w.store.unit(),
        EgressGuard(EgressPolicy(), FakeResolver()),
        w.box,
    )
    w.http.answers[hanging] = [204]
    w.http.release.set()
    await w.worker.settle()
    w.store.now += 3600
    assert await w.claim_and_settle() == 0

    assert {d.status for d in w.store.deliveries_of("gone")} == {"cancelled"}
    assert len(w.store.attempts) == SLOTS, "the attempts in flight are recorded"
    assert sum(d.attempts for d in w.store.deliveries_of("gone")) == SLOTS


async def test_a_failing_delivery_is_retried_with_backoff_and_jitter_then_dead_with_a_dead_letter() -> None:
    w = Worker(max_attempts=3)
    url = w.subscribe("down")
    w.http.answers[url] = [500, "refused", 503]
    [queued] = await w.queue_deliveries("down", 1)
    delivery = w.store.deliveries[queued]
    waits = []

    for _ in range(3):
        assert await w.claim_and_settle() == 1
        waits.append(delivery.next_attempt_at - w.store.now)
        assert await w.claim_and_settle() == 0, "not due again before its back-off"
        w.store.now += 600

    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0, waits
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("dead", 3, "http_5xx")
    [dead_letter] = w.store.outbox
    assert isinstance(dead_letter, Outgoing)
    assert (
        dead_letter.topic == DEAD_LETTERS and dead_letter.key == "down" and dead_letter.value == delivery.body
    )
    assert dead_letter.headers["dlq-cause"] == "webhook_undeliverable"
    assert dead_letter.headers["dlq-error"] == "http_5xx"
    assert dead_letter.headers["dlq-delivery-id"] == queued
    assert dead_letter.headers["dlq-subscription-id"] == "down"
    assert w.commits == 1, "the relay is woken for the dead letter"
    assert [error for _, _, _, error in w.store.attempts] == ["http_5xx", "refused", "http_5xx"]


async def test_a_flaky_endpoint_is_delivered_on_a_later_attempt_under_the_same_webhook_id() -> None:
    w = Worker(max_attempts=3)
    url = w.subscribe("flaky")
    w.http.answers[url] = [500, 500, 204]
    [queued] = await w.queue_deliveries("flaky", 1)

    for _ in range(3):
        await w.claim_and_settle()
        w.store.now += 600

    assert w.http.posted_to(url) == [queued] * 3
    assert (w.store.deliveries[queued].status, w.store.deliveries[queued].attempts) == ("delivered", 3)
    assert w.store.outbox == []


async def test_a_redelivered_dead_delivery_gets_a_fresh_attempt_budget() -> None:
    w = Worker(max_attempts=2)
    url = w.subscribe("back")
    w.http.answers[url] = [500]
    [queued] = await w.queue_deliveries("back", 1)
    for _ in range(2):
        await w.claim_and_settle()
        w.store.now += 600
    assert w.store.deliveries[queued].status == "dead"

    await w.store.unit().deliveries.redeliver(None, "back")
    w.http.answers[url] = [500, 204]
    for _ in range(2):
        await w.claim_and_settle()
        w.store.now += 600

    assert (w.store.deliveries[queued].status, w.store.deliveries[queued].attempts) == ("delivered", 4)
    assert len(w.store.outbox) == 1


async def test_failed_attempts_record_generic_classes_never_addresses_or_exception_text() -> None:
    w = Worker(max_attempts=10)
    url = w.subscribe("odd")
    w.http.answers[url] = [307, 302, 404, 410, 500, 503, "egress_refused", "timeout"]
    await w.queue_deliveries("odd", 1)
    for _ in range(8):
        await w.claim_and_settle()
        w.store.now += 3600

    assert [error for _, _, _, error in w.store.attempts] == [
        "redirect",
        "redirect",
        "http_4xx",
        "http_4xx",
        "http_5xx",
        "http_5xx",
        "egress_refused",
        "timeout",
    ]


class ExplodingSender(FakeWebhookSender):
    async def post(self, url: str, secrets: Sequence[str], webhook_id: str, body: bytes) -> PostOutcome:
        raise OSError("connect call failed ('10.0.0.5', 5432)")


async def test_a_sender_that_raises_is_a_failed_attempt_whose_text_stays_out_of_the_record() -> None:
    w = Worker(max_attempts=1, http=ExplodingSender())
    w.subscribe("boom")
    await w.queue_deliveries("boom", 1)

    await w.claim_and_settle()

    [(_, _, _, error)] = w.store.attempts
    assert error == "sender_failed"
    [dead_letter] = w.store.outbox
    assert dead_letter.headers["dlq-error"] == "sender_failed"


async def test_during_a_rotation_deliveries_are_signed_with_the_new_and_the_old_secret_then_the_new_only() -> (
    None
):
    w = Worker()
    w.store.now = T0.timestamp()
    url = w.subscribe("rotating")
    old, new = w.secret, new_webhook_secret()
    rotate = WebhookSubscriptionChanged(
        action="rotate_secret",
        subscription_id="rotating",
        secret_ciphertext=w.box.seal(new),
        grace_hours=2,
        sent_at=T0,
    )
    await change_subscription(rotate, w.store.unit(), EgressGuard(EgressPolicy(), FakeResolver()), w.box)

    await w.queue_deliveries("rotating", 1)
    await w.claim_and_settle()
    w.store.now += 2 * 3600 + 1
    await w.queue_deliveries("rotating", 1)
    await w.claim_and_settle()

    assert w.http.posted_to(url) and w.http.signed_with == [[new, old], [new]]


async def test_a_secret_that_does_not_open_or_gives_no_key_fails_its_attempts_and_nothing_is_sent() -> None:
    w = Worker(max_attempts=2)
    w.subscribe("other-key")
    w.store.subscriptions["other-key"].sealed_secret = SecretBox(new_key()).seal(w.secret)
    w.subscribe("stored-malformed")  # from before secrets were checked
    w.store.subscriptions["stored-malformed"].sealed_secret = w.box.seal("whsec_not base64!")
    await w.queue_deliveries("other-key", 1)
    await w.queue_deliveries("stored-malformed", 1)

    for _ in range(2):
        await w.claim_and_settle()
        w.store.now += 3600

    assert w.http.posts == []
    assert [error for _, _, _, error in w.store.attempts] == ["secret_unreadable"] * 4
    assert {d.status for d in w.store.deliveries.values()} == {"dead"}, "recorded and given up, never a loop"


async def queue_email(w: Worker, status: str, email: str = "ada@example.com") -> UUID:
    order_id = uuid4()
    unit = w.store.unit()
    await unit.customers.remember([Contact(order_id, email, "Ada", f"ext-{order_id.hex[:6]}")])
    await unit.emails.add([NewEmail(order_id, status, {"tracking": "1Z"})])
    return order_id


async def test_emails_are_rendered_from_their_template_with_a_stable_message_id() -> None:
    w = Worker()
    order_id = await queue_email(w, "shipped")

    assert await w.worker.send_emails() == 1

    [mail] = w.mail.sent
    assert mail.message_id == f"<{order_id}.shipped@baton>"
    assert (mail.sender, mail.recipient) == ("orders@baton.test", "ada@example.com")
    assert mail.subject == f"Your order ext-{order_id.hex[:6]} is on its way"
    assert "Tracking: 1Z" in mail.body and "Hello Ada" in mail.body
    assert w.store.emails[(order_id, "shipped")].state == "sent"
    assert await w.worker.send_emails() == 0


async def test_an_unrenderable_email_never_blocks_the_others_in_its_round() -> None:
    w = Worker(email_attempts=2)
    first = await queue_email(w, "received")
    broken = await queue_email(w, "no_such_template")
    last = await queue_email(w, "delivered")

    await w.worker.send_emails()

    assert sorted(m.message_id for m in w.mail.sent) == sorted(
        [f"<{first}.received@baton>", f"<{last}.delivered@baton>"]
    )
    failed = w.store.emails[(broken, "no_such_template")]
    assert (failed.state, failed.attempts) == ("pending", 1)
    assert failed.last_error is not None and failed.last_error.startswith("cannot render")
    assert failed.next_attempt_at > w.store.now, "due again only after a back-off"

    w.store.now += 600
    await w.worker.send_emails()
    assert (failed.state, failed.attempts) == ("dead", 2)
    w.store.now += 600
    assert await w.worker.send_emails() == 0


async def test_a_refused_recipient_is_marked_failed_while_the_others_are_sent() -> None:
    w = Worker()
    w.mail.refused.add("nobody@example.com")
    sent = [await queue_email(w, "shipped"), await queue_email(w, "delivered")]
    refused = await queue_email(w, "shipped", email="nobody@example.com")

    await w.worker.send_emails()

    assert [w.store.emails[(o, s)].state for o, s in zip(sent, ["shipped", "delivered"], strict=True)] == [
        "sent",
        "sent",
    ]
    failed = w.store.emails[(refused, "shipped")]
    assert (failed.state, failed.attempts) == ("pending", 1)
    assert failed.last_error is not None and "550" in failed.last_error
    assert "nobody@example.com" not in failed.last_error, "the error is kept without the address"
    assert [m.recipient for m in w.mail.sent] == ["ada@example.com", "ada@example.com"]


async def test_an_email_waits_for_its_customers_address() -> None:
    w = Worker()
    order_id = uuid4()
    await w.store.unit().emails.add([NewEmail(order_id, "received", {"tracking": "to follow"})])
    assert await w.worker.send_emails() == 0
    await w.store.unit().customers.remember([Contact(order_id, "ada@example.com", "Ada", "ext-1")])
    assert await w.worker.send_emails() == 1


async def test_a_round_takes_at_most_its_size_oldest_first() -> None:
    w = Worker(round_size=2)
    orders = []
    for _ in range(3):
        orders.append(await queue_email(w, "received"))
        w.store.now += 1

    await w.worker.send_emails()

    assert [m.message_id for m in w.mail.sent] == [f"<{o}.received@baton>" for o in orders[:2]]


async def test_an_erased_customers_queued_emails_are_never_sent() -> None:
    w = Worker()
    order_id = uuid4()
    unit = w.store.unit()
    await unit.customers.remember(
        [
            Contact(
                order_id,
                "ada@example.com",
                "Ada",
                "ext-1",
                "webshop",
                "c1",
                datetime(2026, 11, 27, tzinfo=UTC),
            )
        ]
    )
    await unit.emails.add([NewEmail(order_id, "shipped", {"tracking": "1Z"})])

    await erase_customer(ErasureRequested.model_validate(erasure_request("c1")), w.store.unit())

    assert await w.worker.send_emails() == 0
    assert w.mail.sent == []


@pytest.mark.parametrize(
    "address",
    ["victim@example.com, list@evil.example, more@evil.example", "Ada <ada@example.com>", "ada@localhost"],
)
async def test_an_email_to_anything_but_one_address_is_dead_at_once_and_the_others_are_sent(
    address: str,
) -> None:
    w = Worker()
    before = await queue_email(w, "received")
    hostile = await queue_email(w, "received", email=address)
    after = await queue_email(w, "received")

    await w.worker.send_emails()

    assert sorted(m.message_id for m in w.mail.sent) == sorted(
        [f"<{before}.received@baton>", f"<{after}.received@baton>"]
    )
    assert all(m.recipient == "ada@example.com" for m in w.mail.sent)
    dead = w.store.emails[(hostile, "received")]
    assert (dead.state, dead.attempts) == ("dead", 1), "never retried: it can never be sent"
    assert dead.last_error is not None and "not one valid address" in dead.last_error


def test_an_smtp_message_has_exactly_one_bare_recipient() -> None:
    from services.notification.adapters.smtp import to_message
    from services.notification.app.ports import Mail

    assert to_message(Mail("<m@baton>", "orders@baton.example", "ada@example.com", "s", "b"))["To"] == (
        "ada@example.com"
    )
    for recipient in (
        "a@example.com, b@evil.example",
        "Bob <b@example.com>",
        "a@example.com\r\nBcc: b@evil.example",
    ):
        with pytest.raises(ValueError):
            to_message(Mail("<m@baton>", "orders@baton.example", recipient, "s", "b"))


@pytest.mark.parametrize("timeout_s", [1.0, 3.0, 5.0, 30.0])
def test_a_webhook_lease_outlasts_the_longest_attempt_and_frees_a_crashed_claim_soon(
    timeout_s: float,
) -> None:
    """An attempt resolves the host and then POSTs, each bounded by the timeout; a process that
    crashed holding a claim delays that delivery by the lease (a fixed minute before)."""
    lease = webhook_lease_s(timeout_s)
    assert lease >= 2 * timeout_s + 5
    assert lease <= 2 * timeout_s + 15
