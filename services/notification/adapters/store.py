"""Notification's own PostgreSQL store: subscriptions, deliveries and their attempts, customer
contacts and e-mails, and the status API's read model (order views, parcel stages, timelines)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from libs.contracts.privacy import ERASED, ERASED_EMAIL, ErasureRequested
from libs.platform.erasure_store import PgErasureLedger
from libs.platform.messaging import write_outbox
from services.notification.adapters.board_store import signal_changes
from services.notification.app.ports import (
    AfterAttempt,
    Attempt,
    Contact,
    Dead,
    Delivered,
    DueDelivery,
    DueEmail,
    EmailResult,
    NewApiKey,
    NewDelivery,
    NewEmail,
    NewSubscription,
    Retry,
    Subscriber,
    TimelineEntry,
)
from services.notification.domain.api_keys import ApiKey
from services.notification.domain.read_model import OrderView, ShipmentStage


class SubscriptionCache:
    """Active subscriptions, read again at most every ``ttl_s`` — and as soon as a change made in
    this process is over.

    Every status and stage batch needs them; reading them per event was a tenth of notification's
    CPU. A change becomes visible when the transaction that made it ends, so while one is under way
    reads go to the database and are not kept; the first read after it ends reads afresh. A read
    that started before a change is never kept either."""

    def __init__(self, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._rows: list[Subscriber] | None = None
        self._read_at = 0.0
        self._generation = 0
        self._changes: list[Callable[[], bool]] = []

    async def active(self, read: Callable[[], Awaitable[list[Subscriber]]]) -> list[Subscriber]:
        if self._changes:
            self._changes = [ended for ended in self._changes if not ended()]
            self._drop()
            if self._changes:
                return await read()
        if self._rows is None or self._clock() - self._read_at > self._ttl_s:
            generation, started = self._generation, self._clock()
            rows = await read()
            if generation != self._generation:
                return rows
            self._rows, self._read_at = rows, started
        return self._rows

    def changing(self, ended: Callable[[], bool]) -> None:
        """A transaction changes subscriptions; ``ended()`` tells when it has committed or rolled back."""
        self._drop()
        self._changes.append(ended)

    def _drop(self) -> None:
        self._rows = None
        self._generation += 1


def transaction_ended(conn: asyncpg.Connection) -> Callable[[], bool]:
    def ended() -> bool:
        try:
            return not conn.is_in_transaction()
        except asyncpg.InterfaceError:  # released to the pool: its transaction is over
            return True

    return ended


class PgNotificationUnit:
    """One transaction's view of notification's store: the ports on one connection."""

    def __init__(self, conn: asyncpg.Connection, cache: SubscriptionCache) -> None:
        self.subscriptions = PgSubscriptions(conn, cache)
        self.deliveries = PgDeliveries(conn)
        self.emails = PgEmails(conn)
        self.customers = PgCustomers(conn)
        self.read_model = PgReadModel(conn)
        self.erasures = PgErasureLedger(conn)
        self.api_keys = PgApiKeys(conn)


class PgApiKeys:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, key: NewApiKey) -> None:
        await self._conn.execute(
            "INSERT INTO api_keys (key_id, name, key_hash, channels, role) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT DO NOTHING",
            key.key_id,
            key.name,
            key.digest,
            list(key.channels),
            key.role,
        )

    async def revoke(self, key_id: str) -> bool:
        status = await self._conn.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = $1", key_id
        )
        return bool(status != "UPDATE 0")


class PgSubscriptions:
    def __init__(self, conn: asyncpg.Connection, cache: SubscriptionCache) -> None:
        self._conn = conn
        self._cache = cache

    async def active(self) -> list[Subscriber]:
        return await self._cache.active(self._read_active)

    async def _read_active(self) -> list[Subscriber]:
        rows = await self._conn.fetch("SELECT subscription_id, events FROM subscriptions WHERE active")
        return [Subscriber(r["subscription_id"], frozenset(r["events"])) for r in rows]

    async def add(self, subscription: NewSubscription) -> None:
        self._cache.changing(transaction_ended(self._conn))
        await self._conn.execute(
            "INSERT INTO subscriptions (subscription_id, url, secret_sealed, events) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (subscription_id) DO UPDATE SET url = $2, secret = NULL, secret_sealed = $3,"
            " previous_secret_sealed = NULL, previous_secret_until = NULL, events = $4, active = true,"
            " updated_at = now()",
            subscription.subscription_id,
            subscription.url,
            subscription.sealed_secret,
            list(subscription.events),
        )

    async def rotate_secret(self, subscription_id: str, sealed_secret: str, previous_until: datetime) -> bool:
        rotated: bool | None = await self._conn.fetchval(
            "UPDATE subscriptions SET previous_secret_sealed = secret_sealed, previous_secret_until = $3,"
            " secret_sealed = $2, updated_at = now()"
            " WHERE subscription_id = $1 AND secret_sealed IS NOT NULL RETURNING true",
            subscription_id,
            sealed_secret,
            previous_until,
        )
        return bool(rotated)

    async def deactivate(self, subscription_id: str) -> None:
        self._cache.changing(transaction_ended(self._conn))
        await self._conn.execute(
            "UPDATE subscriptions SET active = false, updated_at = now() WHERE subscription_id = $1",
            subscription_id,
        )


class PgDeliveries:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, deliveries: Sequence[NewDelivery]) -> None:
        if not deliveries:
            return
        await self._conn.execute(
            "INSERT INTO deliveries (delivery_id, subscription_id, event_key, body)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) ON CONFLICT DO NOTHING",
            [d.delivery_id for d in deliveries],
            [d.subscription_id for d in deliveries],
            [d.event_key for d in deliveries],
            [d.body for d in deliveries],
        )

    async def cancel_pending(self, subscription_id: str, reason: str) -> None:
        await self._conn.execute(
            "UPDATE deliveries SET status = 'cancelled', last_error = $2"
            " WHERE subscription_id = $1 AND status = 'pending'",
            subscription_id,
            reason,
        )

    async def redeliver(self, delivery_id: str | None, subscription_id: str | None) -> None:
        await self._conn.execute(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = now(), round_attempts = 0"
            " WHERE status = 'dead' AND (delivery_id = $1 OR subscription_id = $2)",
            delivery_id,
            subscription_id,
        )


class PgEmails:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, emails: Sequence[NewEmail]) -> None:
        if not emails:
            return
        await self._conn.execute(
            "INSERT INTO emails (order_id, status, context)"
            " SELECT o, s, c::jsonb FROM unnest($1::uuid[], $2::text[], $3::text[]) AS e(o, s, c)"
            " WHERE NOT EXISTS (SELECT 1 FROM customers k WHERE k.order_id = e.o AND k.erased_at IS NOT NULL)"
            " ON CONFLICT DO NOTHING",
            [e.order_id for e in emails],
            [e.status for e in emails],
            [orjson.dumps(dict(e.context)).decode() for e in emails],
        )

    async def forget(self, order_ids: Sequence[UUID]) -> int:
        status = await self._conn.execute(
            "UPDATE emails SET state = CASE WHEN state = 'pending' THEN 'cancelled' ELSE state END,"
            " last_error = NULL"
            " WHERE order_id = ANY($1::uuid[]) AND (state = 'pending' OR last_error IS NOT NULL)",
            list(order_ids),
        )
        return int(status.split()[-1])


class PgCustomers:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def remember(self, contacts: Sequence[Contact]) -> None:
        if not contacts:
            return
        await self._conn.execute(
            "INSERT INTO customers (order_id, email, name, external_id, channel, customer_id, placed_at, erased_at)"
            " SELECT o, e, n, x, ch, cu, p, CASE WHEN er THEN now() END"
            " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
            " $7::timestamptz[], $8::bool[]) AS c(o, e, n, x, ch, cu, p, er)"
            " ON CONFLICT DO NOTHING",
            [c.order_id for c in contacts],
            [c.email for c in contacts],
            [c.name for c in contacts],
            [c.external_id for c in contacts],
            [c.channel for c in contacts],
            [c.customer_id for c in contacts],
            [c.placed_at for c in contacts],
            [c.erased for c in contacts],
        )

    async def erase(self, request: ErasureRequested) -> list[UUID]:
        rows = await self._conn.fetch(
            "UPDATE customers SET email = $4, name = $5, customer_id = NULL, erased_at = now()"
            " WHERE customer_id = $1 AND ($2::text IS NULL OR channel = $2) AND placed_at < $3"
            " RETURNING order_id",
            request.customer_id,
            request.channel,
            request.requested_at,
            ERASED_EMAIL,
            ERASED,
        )
        return [r["order_id"] for r in rows]


class PgReadModel:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def record_statuses(self, views: Sequence[OrderView], timeline: Sequence[TimelineEntry]) -> None:
        """One statement: the views (at most one per order) and the timeline entries in order."""
        await self._conn.execute(
            "WITH view AS (INSERT INTO order_views"
            " (order_id, channel, external_id, status, version, eta, shipments, updated_at)"
            " SELECT o, ch, x, s, v, eta, sh::jsonb, at FROM unnest($1::uuid[], $2::text[], $3::text[],"
            " $4::text[], $5::int[], $6::timestamptz[], $7::text[], $8::timestamptz[])"
            " AS n(o, ch, x, s, v, eta, sh, at)"
            " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, version = EXCLUDED.version,"
            " eta = COALESCE(EXCLUDED.eta, order_views.eta),"
            " shipments = CASE WHEN jsonb_array_length(EXCLUDED.shipments) > 0 THEN EXCLUDED.shipments"
            " ELSE order_views.shipments END, updated_at = EXCLUDED.updated_at"
            " WHERE order_views.version < EXCLUDED.version)"
            " INSERT INTO order_timeline (order_id, kind, event, occurred_at)"
            " SELECT o, 'status', e::jsonb, at FROM unnest($9::uuid[], $10::text[], $11::timestamptz[])"
            " WITH ORDINALITY AS t(o, e, at, n) ORDER BY n",
            [v.order_id for v in views],
            [v.channel for v in views],
            [v.external_id for v in views],
            [v.status for v in views],
            [v.version for v in views],
            [v.eta for v in views],
            [orjson.dumps(list(v.shipments)).decode() for v in views],
            [v.updated_at for v in views],
            [t.order_id for t in timeline],
            [t.event for t in timeline],
            [t.occurred_at for t in timeline],
        )
        await signal_changes(self._conn, [v.order_id for v in views])

    async def record_stages(self, stages: Sequence[ShipmentStage], timeline: Sequence[TimelineEntry]) -> None:
        """One statement: the parcels' stages (at most one row per parcel) and the timeline entries."""
        await self._conn.execute(
            "WITH stage AS (INSERT INTO shipment_stages (shipment_id, order_id, pipeline, stage, updated_at)"
            " SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[])"
            " ON CONFLICT (shipment_id) DO UPDATE SET"
            " stage = COALESCE(EXCLUDED.stage, shipment_stages.stage), updated_at = EXCLUDED.updated_at)"
            " INSERT INTO order_timeline (order_id, kind, event, occurred_at)"
            " SELECT o, 'stage', e::jsonb, at FROM unnest($6::uuid[], $7::text[], $8::timestamptz[])"
            " WITH ORDINALITY AS t(o, e, at, n) ORDER BY n",
            [s.shipment_id for s in stages],
            [s.order_id for s in stages],
            [s.pipeline for s in stages],
            [s.stage for s in stages],
            [s.updated_at for s in stages],
            [t.order_id for t in timeline],
            [t.event for t in timeline],
            [t.occurred_at for t in timeline],
        )
        await signal_changes(self._conn, [s.order_id for s in stages])


class PgDeliveryQueue:
    """Implements ``DeliveryQueue``: each call is a short transaction of its own."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(self, slots: int, busy: Mapping[str, int], lease_s: float) -> list[DueDelivery]:
        """One statement: per active subscription, its own oldest due deliveries up to its free
        slots (`SKIP LOCKED`: other processes claim others), leased by pushing `next_attempt_at`."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "WITH slots AS ("
                " SELECT s.subscription_id, s.url, s.secret_sealed,"
                " CASE WHEN s.previous_secret_until > now() THEN s.previous_secret_sealed END AS previous,"
                " $1::int - COALESCE(b.n, 0) AS free"
                " FROM subscriptions s LEFT JOIN unnest($2::text[], $3::int[]) AS b(sid, n)"
                " ON b.sid = s.subscription_id WHERE s.active AND s.secret_sealed IS NOT NULL),"
                " due AS (SELECT d.delivery_id, slots.subscription_id, slots.url, slots.secret_sealed,"
                " slots.previous, d.body, d.attempts, d.round_attempts"
                " FROM slots CROSS JOIN LATERAL ("
                " SELECT delivery_id, body, attempts, round_attempts FROM deliveries"
                " WHERE subscription_id = slots.subscription_id AND status = 'pending'"
                " AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT slots.free"
                " FOR UPDATE SKIP LOCKED) AS d"
                " WHERE slots.free > 0),"
                " leased AS (UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $4)"
                " WHERE delivery_id IN (SELECT delivery_id FROM due))"
                " SELECT * FROM due",
                slots,
                list(busy),
                list(busy.values()),
                lease_s,
            )
        return [
            DueDelivery(
                delivery_id=r["delivery_id"],
                subscription_id=r["subscription_id"],
                url=r["url"],
                secrets=(r["secret_sealed"], r["previous"]) if r["previous"] else (r["secret_sealed"],),
                body=bytes(r["body"]),
                attempts=r["attempts"],
                round_attempts=r["round_attempts"],
            )
            for r in rows
        ]

    async def record(self, due: DueDelivery, attempt: Attempt, then: AfterAttempt) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE deliveries SET attempts = attempts + 1, round_attempts = $2, last_error = $3"
                " WHERE delivery_id = $1 RETURNING attempts, status",
                due.delivery_id,
                due.round_attempts + 1,
                attempt.error,
            )
            if row is None:
                return False
            record_attempt = (
                "INSERT INTO delivery_attempts (delivery_id, attempt, status_code, error, duration_ms)"
                " VALUES ($1, $2, $3, $4, $5)"
            )
            args: list[Any] = [
                due.delivery_id,
                row["attempts"],
                attempt.status_code,
                attempt.error,
                attempt.duration_ms,
            ]
            if row["status"] != "pending":  # cancelled while this attempt was in flight: it stays so
                await conn.execute(record_attempt, *args)
                return False
            if isinstance(then, Retry):
                state, delay = "pending", then.delay_s
            else:
                state, delay = ("delivered" if isinstance(then, Delivered) else "dead"), 0.0
            await conn.execute(
                f"WITH attempt AS ({record_attempt})"
                " UPDATE deliveries SET status = $6,"
                " delivered_at = CASE WHEN $6 = 'delivered' THEN now() END,"
                " next_attempt_at = CASE WHEN $6 = 'pending' THEN now() + make_interval(secs => $7)"
                " ELSE next_attempt_at END"
                " WHERE delivery_id = $1",
                *args,
                state,
                delay,
            )
            if isinstance(then, Dead):
                await write_outbox(conn, [then.dead_letter])
        return True


class PgSubscriptionSecrets:
    """Keeps every stored signing secret sealed under the first key of ``BATON_WEBHOOK_SECRETS_KEY``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def seal_all(
        self, seal: Callable[[str], str], reseal: Callable[[str], str | None]
    ) -> tuple[int, int]:
        """At start-up, in one transaction: a clear secret (written by an earlier release, so the
        one in force) is sealed and the clear column blanked; a sealed one not under the first key
        (after a key change) is re-sealed under it. Returns (sealed, re-sealed); a secret that
        opens with no key is left as it is (its deliveries fail with `secret_unreadable`)."""
        sealed = resealed = 0
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT subscription_id, secret, secret_sealed, previous_secret_sealed FROM subscriptions"
                " WHERE secret IS NOT NULL OR secret_sealed IS NOT NULL FOR UPDATE"
            )
            for r in rows:
                if r["secret"] is not None:
                    current, previous = seal(r["secret"]), None
                    sealed += 1
                else:
                    current = reseal(r["secret_sealed"]) or r["secret_sealed"]
                    previous = r["previous_secret_sealed"]
                    previous = (reseal(previous) or previous) if previous else None
                    if (current, previous) == (r["secret_sealed"], r["previous_secret_sealed"]):
                        continue
                    resealed += 1
                await conn.execute(
                    "UPDATE subscriptions SET secret = NULL, secret_sealed = $2, previous_secret_sealed = $3"
                    " WHERE subscription_id = $1",
                    r["subscription_id"],
                    current,
                    previous,
                )
        return sealed, resealed


class PgEmailRound:
    def __init__(self, pool: asyncpg.Pool, due: list[DueEmail]) -> None:
        self._pool = pool
        self.due = due

    async def record(self, results: Sequence[EmailResult]) -> None:
        """One statement for the round: sent, due again after a back-off, or dead."""
        if not results:
            return
        await self._pool.execute(
            "UPDATE emails e SET attempts = e.attempts + 1,"
            " state = CASE r.state WHEN 'retry' THEN 'pending' ELSE r.state END,"
            " sent_at = CASE WHEN r.state = 'sent' THEN now() ELSE e.sent_at END,"
            " last_error = COALESCE(r.error, e.last_error),"
            " next_attempt_at = CASE WHEN r.state = 'retry' THEN now() + make_interval(secs => r.delay)"
            " ELSE e.next_attempt_at END"
            " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::float8[])"
            " AS r(order_id, status, state, error, delay)"
            " WHERE e.order_id = r.order_id AND e.status = r.status",
            [r.order_id for r in results],
            [r.status for r in results],
            [r.state for r in results],
            [r.error for r in results],
            [r.retry_in_s for r in results],
        )


EMAIL_LEASE_S = 20.0
"""How long a claimed e-mail stays out of other rounds: a round ends long before, unless its process
died, and then its e-mails are due again after this (at least once; the Message-ID is stable)."""


class PgEmailQueue:
    """Implements ``EmailQueue``: a round leases its e-mails in one short transaction (pushing their
    due time out) and records the outcome in another. No transaction stays open while mail is
    sent: an open transaction holds back PostgreSQL's clean-up of every table in the database (the
    outboxes most), which made every service slower the longer a run went on."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def round(self, limit: int) -> AsyncIterator[PgEmailRound]:
        rows = await self._pool.fetch(
            "WITH due AS (SELECT e.order_id, e.status FROM emails e"
            " WHERE e.state = 'pending' AND e.next_attempt_at <= now()"
            " AND EXISTS (SELECT 1 FROM customers c WHERE c.order_id = e.order_id AND c.erased_at IS NULL)"
            " ORDER BY e.next_attempt_at LIMIT $1 FOR UPDATE OF e SKIP LOCKED),"
            " leased AS (UPDATE emails e SET next_attempt_at = now() + make_interval(secs => $2)"
            " FROM due WHERE e.order_id = due.order_id AND e.status = due.status"
            " RETURNING e.order_id, e.status, e.attempts, e.context)"
            " SELECT l.order_id, l.status, l.attempts, l.context::text AS context, c.email, c.name, c.external_id"
            " FROM leased l JOIN customers c USING (order_id)",
            limit,
            EMAIL_LEASE_S,
        )
        yield PgEmailRound(
            self._pool,
            [
                DueEmail(
                    order_id=r["order_id"],
                    status=r["status"],
                    attempts=r["attempts"],
                    email=r["email"],
                    name=r["name"],
                    external_id=r["external_id"],
                    context=orjson.loads(r["context"]),
                )
                for r in rows
            ],
        )


class PgOrderStatusQueries:
    """Implements ``OrderStatusQueries`` for the status API."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def order(self, order_id: UUID) -> dict[str, Any] | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT order_id, channel, external_id, status, version, eta, shipments::text AS shipments"
                " FROM order_views WHERE order_id = $1",
                order_id,
            )
            if row is None:
                return None
            stages = {
                r["shipment_id"]: (r["pipeline"], r["stage"])
                for r in await conn.fetch(
                    "SELECT shipment_id, pipeline, stage FROM shipment_stages WHERE order_id = $1", order_id
                )
            }
            timeline = [
                {
                    "kind": r["kind"],
                    "occurred_at": r["occurred_at"].isoformat(),
                    "event": orjson.loads(r["event"]),
                }
                for r in await conn.fetch(
                    "SELECT kind, event::text AS event, occurred_at FROM order_timeline"
                    " WHERE order_id = $1 ORDER BY seq",
                    order_id,
                )
            ]
        shipments = orjson.loads(row["shipments"])
        for shipment in shipments:
            if shipment["shipment_id"] in stages:
                shipment["pipeline"], shipment["stage"] = stages[shipment["shipment_id"]]
        return {
            "order_id": str(row["order_id"]),
            "channel": row["channel"],
            "external_id": row["external_id"],
            "status": row["status"],
            "version": row["version"],
            "eta": row["eta"].isoformat() if row["eta"] else None,
            "shipments": shipments,
            "timeline": timeline,
        }

    async def find(self, channel: str, external_id: str) -> UUID | None:
        async with self._pool.acquire() as conn:
            order_id: UUID | None = await conn.fetchval(
                "SELECT order_id FROM order_views WHERE channel = $1 AND external_id = $2",
                channel,
                external_id,
            )
        return order_id

    async def api_key(self, digest: str) -> ApiKey | None:
        row = await self._pool.fetchrow(
            "SELECT key_id, channels, role, name FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            digest,
        )
        if row is None:
            return None
        return ApiKey(row["key_id"], frozenset(row["channels"]), row["role"], row["name"])

    async def ready(self) -> bool:
        try:
            async with self._pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True
