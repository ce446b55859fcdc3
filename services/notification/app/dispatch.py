"""Sends what notification recorded: signed webhooks with retries, and customer e-mails over SMTP.

Each due delivery is claimed (`FOR UPDATE SKIP LOCKED`, leased by pushing `next_attempt_at`)
and sent in its own task, with at most a few in flight per subscription: a slow or dead endpoint
uses up only its own slots, never another subscriber's. Every attempt is recorded; after the last
one the delivery is `dead` and a dead letter names it, until `baton webhooks redeliver`.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from importlib import resources
from string import Template
from typing import Any

import aiohttp
import asyncpg
import orjson

from libs.contracts.topics import dead_letter_topic
from libs.platform import metrics
from libs.platform.messaging import Outgoing, write_outbox
from libs.platform.settings import BatonSettings
from services.notification.domain.webhooks import is_success, retry_delay, sign

log = logging.getLogger("baton.notification")
LEASE_S = 60.0
SMTP_CONNECTIONS = 4


@dataclass(frozen=True)
class Due:
    delivery_id: str
    subscription_id: str
    url: str
    secret: str
    body: bytes
    round_attempts: int


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool, settings: BatonSettings, on_commit: Any) -> None:
        self._pool = pool
        self._settings = settings
        self._webhooks_due = asyncio.Event()
        self._emails_due = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[str, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runners: list[asyncio.Task[None]] = []
        self._on_commit = on_commit

    def wake(self) -> None:
        self._webhooks_due.set()
        self._emails_due.set()

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout_s)
        )
        # Two independent loops: an SMTP round never holds up webhooks, nor the other way round.
        self._runners = [
            asyncio.create_task(
                self._loop(self._claim_webhooks, self._webhooks_due), name="webhook-dispatcher"
            ),
            asyncio.create_task(self._loop(self._send_emails, self._emails_due), name="email-dispatcher"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self.wake()
        if self._runners:
            await asyncio.wait_for(asyncio.gather(*self._runners), 15)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._settings.webhook_timeout_s + 2)
        if self._session:
            await self._session.close()

    async def _loop(self, work: Callable[[], Awaitable[int]], due: asyncio.Event) -> None:
        """Run ``work`` while it finds something to do; otherwise wait to be woken (or poll)."""
        while not self._stopping:
            try:
                done = await work()
            except Exception:
                log.warning("dispatcher round failed; retrying", exc_info=True)
                done = 0
            if done == 0:
                try:
                    await asyncio.wait_for(due.wait(), timeout=0.5)
                except TimeoutError:
                    pass
                due.clear()

    async def _claim_webhooks(self) -> int:
        """Claim due deliveries per active subscription, up to each one's free slots.

        Each subscription gets its own oldest due deliveries, so a subscriber with a huge backlog
        (or one that never answers) never keeps another subscriber's deliveries waiting; removed
        subscriptions are not claimed at all."""
        per_subscription = self._settings.webhook_concurrency_per_subscription
        busy = {sid: n for sid, n in self._in_flight.items() if n > 0}
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "WITH slots AS ("
                " SELECT s.subscription_id, s.url, s.secret, $1::int - COALESCE(b.n, 0) AS free"
                " FROM subscriptions s LEFT JOIN unnest($2::text[], $3::int[]) AS b(sid, n)"
                " ON b.sid = s.subscription_id WHERE s.active)"
                " SELECT d.delivery_id, slots.subscription_id, slots.url, slots.secret, d.body, d.round_attempts"
                " FROM slots CROSS JOIN LATERAL ("
                " SELECT delivery_id, body, round_attempts FROM deliveries"
                " WHERE subscription_id = slots.subscription_id AND status = 'pending'"
                " AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT slots.free"
                " FOR UPDATE SKIP LOCKED) AS d"
                " WHERE slots.free > 0",
                per_subscription,
                list(busy),
                list(busy.values()),
            )
            chosen = [
                Due(
                    r["delivery_id"],
                    r["subscription_id"],
                    r["url"],
                    r["secret"],
                    bytes(r["body"]),
                    r["round_attempts"],
                )
                for r in rows
            ]
            for due in chosen:
                self._in_flight[due.subscription_id] += 1
            if chosen:
                await conn.execute(
                    "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2)"
                    " WHERE delivery_id = ANY($1::text[])",
                    [d.delivery_id for d in chosen],
                    LEASE_S,
                )
        for due in chosen:
            task = asyncio.create_task(self._deliver(due))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(chosen)

    async def _deliver(self, due: Due) -> None:
        try:
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": due.delivery_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(due.secret, due.delivery_id, timestamp, due.body),
            }
            started = time.monotonic()
            status: int | None = None
            error: str | None = None
            assert self._session is not None
            try:
                async with self._session.post(due.url, data=due.body, headers=headers) as response:
                    status = response.status
                    if not is_success(status):
                        error = f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            await self._record(due, status, error, int((time.monotonic() - started) * 1000))
        except Exception:
            log.warning("delivery bookkeeping failed; the lease will expire and it is retried", exc_info=True)
        finally:
            self._in_flight[due.subscription_id] -= 1
            self._webhooks_due.set()

    async def _record(self, due: Due, status: int | None, error: str | None, duration_ms: int) -> None:
        settings = self._settings
        attempt = due.round_attempts + 1
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE deliveries SET attempts = attempts + 1, round_attempts = $2, last_error = $3"
                " WHERE delivery_id = $1 RETURNING attempts, status",
                due.delivery_id,
                attempt,
                error,
            )
            total = row["attempts"]
            await conn.execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, status_code, error, duration_ms)"
                " VALUES ($1, $2, $3, $4, $5)",
                due.delivery_id,
                total,
                status,
                error,
                duration_ms,
            )
            if row["status"] != "pending":
                pass  # cancelled (subscription removed) while this attempt was in flight: it stays so
            elif error is None:
                await conn.execute(
                    "UPDATE deliveries SET status = 'delivered', delivered_at = now() WHERE delivery_id = $1",
                    due.delivery_id,
                )
            elif attempt >= settings.webhook_max_attempts:
                await conn.execute(
                    "UPDATE deliveries SET status = 'dead' WHERE delivery_id = $1", due.delivery_id
                )
                await write_outbox(
                    conn,
                    [
                        Outgoing(
                            topic=settings.topic(dead_letter_topic("notification")),
                            key=due.subscription_id,
                            value=due.body,
                            headers={
                                "event_id": f"{due.delivery_id}/dead/{total}",
                                "event_type": "dead-letter",
                                "dlq-cause": "webhook_undeliverable",
                                "dlq-error": error,
                                "dlq-delivery-id": due.delivery_id,
                                "dlq-subscription-id": due.subscription_id,
                            },
                        )
                    ],
                )
            else:
                delay = retry_delay(attempt, settings.webhook_backoff_base_s, settings.webhook_backoff_cap_s)
                await conn.execute(
                    "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2) WHERE delivery_id = $1",
                    due.delivery_id,
                    delay,
                )
        outcome = (
            "delivered" if error is None else "dead" if attempt >= settings.webhook_max_attempts else "retry"
        )
        if row["status"] != "pending" and outcome != "delivered":
            outcome = "cancelled"
        metrics.count(metrics.WEBHOOK_ATTEMPTS, outcome)
        if outcome == "dead":
            self._on_commit()

    async def _send_emails(self) -> int:
        """Send due e-mails in rounds of up to 200; each is marked sent only once the server accepted it."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT e.order_id, e.status, e.context::text AS context, c.email, c.name, c.external_id"
                " FROM emails e JOIN customers c USING (order_id)"
                " WHERE e.state = 'pending' AND e.next_attempt_at <= now()"
                " ORDER BY e.next_attempt_at LIMIT 200 FOR UPDATE OF e SKIP LOCKED"
            )
            if not rows:
                return 0
            messages = [
                render_email(
                    r["status"],
                    self._settings.smtp_from,
                    r["email"],
                    {
                        "name": r["name"],
                        "external_id": r["external_id"],
                        "order_id": str(r["order_id"]),
                        **orjson.loads(r["context"]),
                    },
                )
                for r in rows
            ]
            # Up to four SMTP connections at once, each sending its share of the round.
            shares = [messages[i::SMTP_CONNECTIONS] for i in range(SMTP_CONNECTIONS)]
            results = await asyncio.gather(
                *(asyncio.to_thread(self._smtp_send_all, share) for share in shares)
            )
            errors: list[str | None] = [None] * len(messages)
            for offset, share_errors in enumerate(results):
                errors[offset::SMTP_CONNECTIONS] = share_errors
            sent = [
                (r["order_id"], r["status"]) for r, error in zip(rows, errors, strict=True) if error is None
            ]
            failed = [
                (r["order_id"], r["status"], error) for r, error in zip(rows, errors, strict=True) if error
            ]
            if sent:
                await conn.executemany(
                    "UPDATE emails SET state = 'sent', sent_at = now(), attempts = attempts + 1"
                    " WHERE order_id = $1 AND status = $2",
                    sent,
                )
            if failed:
                await conn.executemany(
                    "UPDATE emails SET attempts = attempts + 1, last_error = $3,"
                    " next_attempt_at = now() + make_interval(secs => least(300, 2 ^ least(attempts, 8)))"
                    " WHERE order_id = $1 AND status = $2",
                    failed,
                )
        metrics.count(metrics.EMAILS, "sent", amount=len(sent))
        metrics.count(metrics.EMAILS, "failed", amount=len(failed))
        return len(sent)

    def _smtp_send_all(self, messages: list[EmailMessage]) -> list[str | None]:
        """One connection for these messages; per message, None when accepted or the error."""
        if not messages:
            return []
        try:
            smtp = smtplib.SMTP(self._settings.smtp_host, self._settings.smtp_port, timeout=10)
        except (OSError, smtplib.SMTPException) as exc:
            return [repr(exc)[:500]] * len(messages)
        results: list[str | None] = []
        with smtp:
            for message in messages:
                try:
                    smtp.send_message(message)
                    results.append(None)
                except (OSError, smtplib.SMTPException) as exc:
                    results.append(repr(exc)[:500])
        return results


def render_email(status: str, sender: str, recipient: str, values: dict[str, str]) -> EmailMessage:
    """Fill `templates/<status>.txt` (first line `Subject: …`); Message-ID is stable per order and status."""
    text = resources.files("services.notification").joinpath(f"templates/{status}.txt").read_text()
    subject_line, _, body = Template(text).safe_substitute(values).partition("\n")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject_line.removeprefix("Subject:").strip()
    message["Message-ID"] = f"<{values['order_id']}.{status}@baton>"
    message.set_content(body.strip() + "\n")
    return message
