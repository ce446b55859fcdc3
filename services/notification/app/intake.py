"""What notification records from events: subscriptions, deliveries to make, e-mails to send, the read model."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from libs.contracts.fulfillment import StageChanged
from libs.contracts.lifecycle import OrderReceived
from libs.contracts.notification import RedeliveryRequested, WebhookSubscriptionChanged
from libs.contracts.orders import OrderStatusChanged
from libs.platform.messaging import Outgoing, Rejected
from services.notification.domain.webhooks import wants

EMAIL_STATUSES = frozenset(
    {"received", "partially_shipped", "shipped", "delivered", "cancelled", "backordered"}
)
DELIVERY_NAMESPACE = uuid.UUID("0b5d8a51-7c55-4bd4-8f6e-5a3a8c1c2f10")


def delivery_id(subscription_id: str, source_event_id: str) -> str:
    """Stable per (subscription, event): a redelivered event never makes a second delivery."""
    return "msg_" + uuid.uuid5(DELIVERY_NAMESPACE, f"{subscription_id}/{source_event_id}").hex


async def change_subscription(
    conn: asyncpg.Connection, command: WebhookSubscriptionChanged
) -> list[Outgoing]:
    if command.action == "remove":
        # Its pending deliveries are cancelled, not sent: a removed endpoint gets nothing more.
        await conn.execute(
            "WITH removed AS (UPDATE subscriptions SET active = false, updated_at = now()"
            " WHERE subscription_id = $1)"
            " UPDATE deliveries SET status = 'cancelled', last_error = 'subscription removed'"
            " WHERE subscription_id = $1 AND status = 'pending'",
            command.subscription_id,
        )
        return []
    if not command.url or not command.secret or not command.events:
        raise Rejected("schema_violation", "adding a subscription needs url, secret and events")
    if not command.url.startswith(("http://", "https://")):
        raise Rejected("schema_violation", f"url must be http(s): {command.url}")
    await conn.execute(
        "INSERT INTO subscriptions (subscription_id, url, secret, events) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (subscription_id) DO UPDATE SET url = $2, secret = $3, events = $4, active = true,"
        " updated_at = now()",
        command.subscription_id,
        command.url,
        command.secret,
        command.events,
    )
    return []


class SubscriptionCache:
    """Active subscriptions, read again at most every ``ttl_s`` and at once after a change seen here.

    Every status and stage event needs them; reading them per event was a tenth of notification's CPU.
    """

    def __init__(self, ttl_s: float = 1.0) -> None:
        self._ttl_s = ttl_s
        self._rows: list[tuple[str, list[str]]] | None = None
        self._read_at = 0.0
        self._changed = False

    async def active(self, conn: asyncpg.Connection) -> list[tuple[str, list[str]]]:
        if self._rows is None or time.monotonic() - self._read_at > self._ttl_s:
            rows = await conn.fetch("SELECT subscription_id, events FROM subscriptions WHERE active")
            self._rows = [(r["subscription_id"], list(r["events"])) for r in rows]
            self._read_at = time.monotonic()
        return self._rows

    def invalidate(self) -> None:
        self._rows = None
        self._changed = True

    def after_commit(self) -> None:
        """A change is visible only once committed: drop what was read before that (once)."""
        if self._changed:
            self._changed = False
            self._rows = None


async def _fan_out(
    conn: asyncpg.Connection,
    subscriptions: SubscriptionCache,
    event_key: str,
    source_event_id: str,
    data: dict[str, Any],
    occurred_at: str,
) -> int:
    targets = [sid for sid, events in await subscriptions.active(conn) if wants(events, event_key)]
    if not targets:
        return 0
    body = orjson.dumps({"type": event_key, "timestamp": occurred_at, "data": data})
    await conn.executemany(
        "INSERT INTO deliveries (delivery_id, subscription_id, event_key, body) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING",
        [(delivery_id(sid, source_event_id), sid, event_key, body) for sid in targets],
    )
    return len(targets)


async def on_stage(
    conn: asyncpg.Connection, subscriptions: SubscriptionCache, event: StageChanged, raw: bytes
) -> list[Outgoing]:
    data = orjson.loads(raw)
    occurred = event.occurred_at.isoformat()
    if event.entered_stage:
        await _fan_out(
            conn,
            subscriptions,
            f"stage.entered:{event.entered_stage}",
            f"{event.event_id}/in",
            data,
            occurred,
        )
    if event.left_stage:
        await _fan_out(
            conn, subscriptions, f"stage.left:{event.left_stage}", f"{event.event_id}/out", data, occurred
        )
    stage = event.entered_stage if event.change != "left" else None
    await conn.execute(
        "INSERT INTO shipment_stages (shipment_id, order_id, pipeline, stage, updated_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (shipment_id) DO UPDATE SET stage = COALESCE($4, shipment_stages.stage), updated_at = $5",
        event.shipment_id,
        event.order_id,
        event.pipeline,
        stage,
        event.occurred_at,
    )
    await conn.execute(
        "INSERT INTO order_timeline (order_id, kind, event, occurred_at) VALUES ($1, 'stage', $2::jsonb, $3)",
        event.order_id,
        raw.decode(),
        event.occurred_at,
    )
    return []


async def on_received(conn: asyncpg.Connection, fact: OrderReceived) -> list[Outgoing]:
    """Where to write to the customer (status events do not carry personal data)."""
    customer = fact.order.customer
    await conn.execute(
        "INSERT INTO customers (order_id, email, name, external_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        fact.order_id,
        customer.email,
        customer.name,
        fact.order.external_id,
    )
    return []


async def redeliver(conn: asyncpg.Connection, request: RedeliveryRequested) -> list[Outgoing]:
    """Put dead deliveries back in the queue with a fresh attempt budget; earlier attempts stay recorded."""
    if request.delivery_id is None and request.subscription_id is None:
        raise Rejected("schema_violation", "name a delivery_id or a subscription_id")
    await conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = now(), round_attempts = 0"
        " WHERE status = 'dead' AND (delivery_id = $1 OR subscription_id = $2)",
        request.delivery_id,
        request.subscription_id,
    )
    return []


async def on_statuses(
    conn: asyncpg.Connection,
    subscriptions: SubscriptionCache,
    items: Sequence[tuple[OrderStatusChanged, bytes] | Rejected],
) -> list[list[Outgoing] | Rejected]:
    """Webhooks, e-mails, read model and timeline for a batch of status events, set-based.

    Four statements per batch instead of two or three per event. Several events of one order in a
    batch are folded first, as applying them one by one would: the highest version wins, the ETA
    and shipments are the latest given."""
    active = await subscriptions.active(conn)
    deliveries: list[tuple[str, str, str, bytes]] = []
    emails: list[tuple[uuid.UUID, str, str]] = []
    timeline: list[tuple[uuid.UUID, str, datetime]] = []
    views: dict[uuid.UUID, ViewRow] = {}
    for item in items:
        if isinstance(item, Rejected):
            continue
        event, raw = item
        status = event.status.value
        event_key = f"order.{status}"
        targets = [sid for sid, events in active if wants(events, event_key)]
        if targets:
            body = orjson.dumps(
                {"type": event_key, "timestamp": event.occurred_at.isoformat(), "data": orjson.loads(raw)}
            )
            deliveries += [(delivery_id(sid, str(event.event_id)), sid, event_key, body) for sid in targets]
        if status in EMAIL_STATUSES:
            tracking = (
                ", ".join(s.tracking_number for s in event.shipments if s.tracking_number) or "to follow"
            )
            emails.append((event.order_id, status, orjson.dumps({"tracking": tracking}).decode()))
        timeline.append((event.order_id, raw.decode(), event.occurred_at))
        views[event.order_id] = ViewRow.fold(views.get(event.order_id), event, raw)
    if deliveries:
        await conn.executemany(
            "INSERT INTO deliveries (delivery_id, subscription_id, event_key, body) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING",
            deliveries,
        )
    if emails:
        await conn.execute(
            "INSERT INTO emails (order_id, status, context)"
            " SELECT o, s, c::jsonb FROM unnest($1::uuid[], $2::text[], $3::text[]) AS e(o, s, c)"
            " ON CONFLICT DO NOTHING",
            [e[0] for e in emails],
            [e[1] for e in emails],
            [e[2] for e in emails],
        )
    if timeline:
        rows = list(views.values())
        await conn.execute(
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
            [r.order_id for r in rows],
            [r.channel for r in rows],
            [r.external_id for r in rows],
            [r.status for r in rows],
            [r.version for r in rows],
            [r.eta for r in rows],
            [r.shipments_json for r in rows],
            [r.updated_at for r in rows],
            [t[0] for t in timeline],
            [t[1] for t in timeline],
            [t[2] for t in timeline],
        )
    return [item if isinstance(item, Rejected) else [] for item in items]


@dataclass(frozen=True)
class ViewRow:
    """An order's read-model row after the status events of one batch."""

    order_id: uuid.UUID
    channel: str
    external_id: str
    status: str
    version: int
    eta: datetime | None
    shipments_json: str
    updated_at: datetime

    @classmethod
    def fold(cls, before: ViewRow | None, event: OrderStatusChanged, raw: bytes) -> ViewRow:
        if before is not None and before.version >= event.version:
            return before
        shipments = (
            orjson.dumps(orjson.loads(raw)["shipments"]).decode()
            if event.shipments
            else (before.shipments_json if before is not None else "[]")
        )
        return cls(
            order_id=event.order_id,
            channel=event.channel,
            external_id=event.external_id,
            status=event.status.value,
            version=event.version,
            eta=event.eta or (before.eta if before is not None else None),
            shipments_json=shipments,
            updated_at=event.occurred_at,
        )
