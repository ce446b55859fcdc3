"""The delivery worker: sends what the use cases recorded — signed webhooks and customer e-mails.

Webhooks: each active subscription claims its own oldest due deliveries, at most
``slots_per_subscription`` in flight at once, each sent in its own task: a slow or dead endpoint
uses up only its own slots, never another subscriber's. A removed subscription's deliveries are
not claimed (they were cancelled); an attempt in flight when it was removed is recorded, and the
delivery stays cancelled. A failed attempt is retried after an exponential back-off with jitter;
after the last one the delivery is `dead` and a dead letter names it (`baton webhooks redeliver`
sends it again). What an attempt records as its error is a generic class (`egress_refused`,
`timeout`, `refused`, `dns`, `tls`, `redirect`, `http_4xx`, `http_5xx`, ...): subscribers and
whoever reads dead letters see it, and an address or an exception's text would tell them what
listens inside the network. Signing secrets are opened only here, for the attempt.

E-mails: in rounds of due e-mails. Each is rendered and sent on its own, so one that cannot be
rendered or that the server refuses never holds up the others: it is due again after a back-off,
and `dead` after ``max_attempts``. One whose address is not exactly one address is `dead` at once. Each e-mail is marked sent only once the server accepted it (at
least once; its Message-ID is stable, so a copy sent twice is recognisable).

The two loops are independent: an SMTP round never holds up webhooks, nor the other way round.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from libs.platform import metrics
from libs.platform.records import dead_letter_of
from services.notification.app.ports import (
    AfterAttempt,
    Attempt,
    Dead,
    Delivered,
    DeliveryQueue,
    DueDelivery,
    DueEmail,
    EmailQueue,
    EmailResult,
    Mail,
    MailSender,
    Retry,
    SecretBox,
    Templates,
    WebhookSender,
)
from services.notification.domain import emails, webhooks

log = logging.getLogger("baton.notification")

IDLE_POLL_S = 0.5


@dataclass(frozen=True)
class WebhookPolicy:
    slots_per_subscription: int
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    dead_letters: str
    """Where a delivery given up on is dead-lettered (the service's dead-letter topic)."""
    lease_s: float = 60.0
    """How long a claimed delivery is kept from other claimers (longer than any attempt takes);
    the service sets it with ``webhook_lease_s``."""
    rng: random.Random = field(default_factory=random.Random)


def webhook_lease_s(timeout_s: float) -> float:
    """A claimed delivery's lease for a webhook timeout: the longest attempt (resolving the host,
    then the POST, each bounded by the timeout) with ten seconds to spare. It is also how long a
    delivery claimed by a process that crashed waits before another process claims it, which a
    fixed minute made the last thing to settle after a crash."""
    return 2 * timeout_s + 10.0


@dataclass(frozen=True)
class EmailPolicy:
    sender: str
    round_size: int
    max_attempts: int


class DeliveryWorker:
    def __init__(
        self,
        *,
        deliveries: DeliveryQueue,
        webhooks: WebhookSender,
        secrets: SecretBox,
        webhook_policy: WebhookPolicy,
        emails: EmailQueue,
        templates: Templates,
        mail: MailSender,
        email_policy: EmailPolicy,
        committed: Callable[[], None],
    ) -> None:
        """``committed`` is called after a transaction wrote to the outbox (a dead letter)."""
        self._deliveries = deliveries
        self._sender = webhooks
        self._secrets = secrets
        self._webhook_policy = webhook_policy
        self._emails = emails
        self._templates = templates
        self._mail = mail
        self._email_policy = email_policy
        self._committed = committed
        self._webhooks_due = asyncio.Event()
        self._emails_due = asyncio.Event()
        self._in_flight: dict[str, int] = defaultdict(int)
        self._sending: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False

    def wake(self) -> None:
        """Something may be due now (a transaction committed): look at once instead of at the next poll."""
        self._webhooks_due.set()
        self._emails_due.set()

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._loop(self.claim_webhooks, self._webhooks_due), name="webhook-delivery"),
            asyncio.create_task(self._loop(self.send_emails, self._emails_due), name="email-delivery"),
        ]

    async def stop(self, timeout_s: float = 15.0) -> None:
        """Claim nothing more; wait for the round and the attempts under way (up to ``timeout_s``)."""
        self._stopping = True
        self.wake()
        if self._loops:
            await asyncio.wait(self._loops, timeout=timeout_s)
        await self.settle(timeout_s)

    async def settle(self, timeout_s: float | None = None) -> None:
        """Wait for the webhook attempts under way to be sent and recorded."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout_s)

    async def _loop(self, work: Callable[[], Awaitable[int]], due: asyncio.Event) -> None:
        """Run ``work`` while it finds something to do; otherwise wait to be woken (or poll)."""
        while not self._stopping:
            try:
                done = await work()
            except Exception:
                log.warning("delivery round failed; retrying", exc_info=True)
                done = 0
            if done == 0:
                try:
                    await asyncio.wait_for(due.wait(), timeout=IDLE_POLL_S)
                except TimeoutError:
                    pass
                due.clear()

    # Webhooks

    async def claim_webhooks(self) -> int:
        """Claim due deliveries up to each subscription's free slots and start sending them."""
        policy = self._webhook_policy
        busy = {sid: n for sid, n in self._in_flight.items() if n > 0}
        claimed = await self._deliveries.claim(policy.slots_per_subscription, busy, policy.lease_s)
        for due in claimed:
            self._in_flight[due.subscription_id] += 1
            task = asyncio.create_task(self._deliver(due))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return len(claimed)

    async def _deliver(self, due: DueDelivery) -> None:
        try:
            try:
                attempt = await self._attempt(due)
            except Exception:  # a failing sender is a failed attempt, never an endless lease
                log.warning("webhook sender failed", exc_info=True)
                attempt = Attempt(None, "sender_failed", 0)
            then = self.after(due, attempt)
            applied = await self._deliveries.record(due, attempt, then)
            outcome = _outcome(then) if applied else "cancelled"
            metrics.count(metrics.WEBHOOK_ATTEMPTS, outcome)
            if outcome == "dead":
                self._committed()
        except Exception:
            log.warning("delivery bookkeeping failed; the lease will expire and it is retried", exc_info=True)
        finally:
            self._in_flight[due.subscription_id] -= 1
            self._webhooks_due.set()

    async def _attempt(self, due: DueDelivery) -> Attempt:
        """One POST signed with each of the subscription's secrets in force; a secret that does
        not open or gives no key fails the attempt (`secret_unreadable`), recorded like any other."""
        opened = [self._secrets.open(sealed) for sealed in due.secrets]
        secrets = [s for s in opened if s is not None and webhooks.can_sign(s)]
        if not secrets or len(secrets) < len(opened):
            return Attempt(None, "secret_unreadable", 0)
        sent = await self._sender.post(due.url, secrets, due.delivery_id, due.body)
        error = sent.transport_error
        if error is None and sent.status_code is not None:
            error = webhooks.status_problem(sent.status_code)
        return Attempt(sent.status_code, error, sent.duration_ms)

    def after(self, due: DueDelivery, attempt: Attempt) -> AfterAttempt:
        """Delivered; or retried after a back-off with jitter; or, after the last attempt, dead."""
        policy = self._webhook_policy
        if attempt.error is None:
            return Delivered()
        tried = due.round_attempts + 1
        if tried >= policy.max_attempts:
            return Dead(
                dead_letter_of(
                    policy.dead_letters,
                    key=due.subscription_id,
                    value=due.body,
                    cause="webhook_undeliverable",
                    detail=attempt.error,
                    headers={
                        "event_id": f"{due.delivery_id}/dead/{due.attempts + 1}",
                        "event_type": "dead-letter",
                        "dlq-delivery-id": due.delivery_id,
                        "dlq-subscription-id": due.subscription_id,
                    },
                )
            )
        return Retry(webhooks.retry_delay(tried, policy.backoff_base_s, policy.backoff_cap_s, policy.rng))

    # E-mails

    async def send_emails(self) -> int:
        """One round: render each due e-mail and send those that rendered; returns how many were due."""
        policy = self._email_policy
        async with self._emails.round(policy.round_size) as round_:
            due = list(round_.due)
            if not due:
                return 0
            results: dict[int, EmailResult] = {}
            mails: list[tuple[int, Mail]] = []
            for i, email in enumerate(due):
                try:
                    mails.append((i, self.compose(email)))
                except emails.Undeliverable as exc:
                    results[i] = EmailResult(email.order_id, email.status, "dead", str(exc)[:500])
                except Exception as exc:
                    results[i] = self._failed(email, f"cannot render: {type(exc).__name__}: {exc}"[:500])
            sent = await self._mail.send([m for _, m in mails]) if mails else []
            for (i, _), error in zip(mails, sent, strict=True):
                results[i] = (
                    EmailResult(due[i].order_id, due[i].status, "sent")
                    if error is None
                    else self._failed(due[i], error)
                )
            ordered = [results[i] for i in range(len(due))]
            await round_.record(ordered)
        for state in ("sent", "retry", "dead"):
            if n := sum(1 for r in ordered if r.state == state):
                metrics.count(metrics.EMAILS, "failed" if state == "retry" else state, amount=n)
        return len(due)

    def compose(self, email: DueEmail) -> Mail:
        """The customer's message for this status, from its template; Message-ID stable per order and status."""
        values = {
            "why": "",  # e-mails recorded before a template asked for it
            **email.context,
            "name": email.name,
            "external_id": email.external_id,
            "order_id": str(email.order_id),
        }
        to = emails.recipient(email.email)
        text = self._templates.render(emails.template_of(email.status), values)
        return Mail(
            message_id=emails.message_id(email.order_id, email.status),
            sender=self._email_policy.sender,
            recipient=to,
            subject=text.subject,
            body=text.body,
            order_id=email.order_id,
        )

    def _failed(self, email: DueEmail, error: str) -> EmailResult:
        """Retried after a back-off, or dead after the last attempt. The error is kept without the
        recipient's address and name: a mail server's refusal often quotes them."""
        for personal in (email.email, email.name):
            if len(personal) >= 3:
                error = error.replace(personal, "<recipient>")
        tried = email.attempts + 1
        if tried >= self._email_policy.max_attempts:
            return EmailResult(email.order_id, email.status, "dead", error)
        return EmailResult(email.order_id, email.status, "retry", error, emails.retry_delay(tried))


def _outcome(then: AfterAttempt) -> str:
    if isinstance(then, Delivered):
        return "delivered"
    return "dead" if isinstance(then, Dead) else "retry"
