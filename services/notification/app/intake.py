"""What notification records from events: subscriptions, deliveries to make, e-mails to send, the read model."""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
import orjson

from libs.contracts.fulfillment import StageChanged
from libs.contracts.lifecycle import OrderReceived
from libs.contracts.notification import RedeliveryRequested, WebhookSubscriptionChanged
from libs.contracts.orders import OrderStatusChanged
from libs.platform.messaging import Outgoing, Rejected
from services.notification.domain.webhooks import wants

EMAIL_STATUSES = frozenset({"received", "shipped", "delivered", "cancelled", "backordered"})
DELIVERY_NAMESPACE = uuid.UUID("0b5d8a51-7c55-4bd4-8f6e-5a3a8c1c2f10")


def delivery_id(subscription_id: str, source_event_id: str) -> str:
    """Stable per (subscription, event): a redelivered event never makes a second delivery."""
    return "msg_" + uuid.uuid5(DELIVERY_NAMESPACE, f"{subscription_id}/{source_event_id}").hex


async def change_subscription(
    conn: asyncpg.Connection, command: WebhookSubscriptionChanged
) -> list[Outgoing]:
    if command.action == "remove":
        await conn.execute(
            "UPDATE subscriptions SET active = false, updated_at = now() WHERE subscription_id = $1",
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


async def on_status(
    conn: asyncpg.Connection, subscriptions: SubscriptionCache, event: OrderStatusChanged, raw: bytes
) -> list[Outgoing]:
    """Webhooks for `order.<status>`, an e-mail for the statuses customers care about, the read model."""
    data = orjson.loads(raw)
    occurred = event.occurred_at.isoformat()
    await _fan_out(conn, subscriptions, f"order.{event.status.value}", str(event.event_id), data, occurred)
    if event.status.value in EMAIL_STATUSES:
        tracking = ", ".join(s.tracking_number for s in event.shipments if s.tracking_number) or "to follow"
        await conn.execute(
            "INSERT INTO emails (order_id, status, context) VALUES ($1, $2, $3::jsonb) ON CONFLICT DO NOTHING",
            event.order_id,
            event.status.value,
            orjson.dumps({"tracking": tracking}).decode(),
        )
    await conn.execute(
        "WITH view AS (INSERT INTO order_views"
        " (order_id, channel, external_id, status, version, eta, shipments, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) ON CONFLICT (order_id) DO UPDATE SET"
        " status = $4, version = $5, eta = COALESCE($6, order_views.eta),"
        " shipments = CASE WHEN jsonb_array_length($7::jsonb) > 0 THEN $7::jsonb ELSE order_views.shipments END,"
        " updated_at = $8 WHERE order_views.version < $5)"
        " INSERT INTO order_timeline (order_id, kind, event, occurred_at) VALUES ($1, 'status', $9::jsonb, $8)",
        event.order_id,
        event.channel,
        event.external_id,
        event.status.value,
        event.version,
        event.eta,
        orjson.dumps(data.get("shipments", [])).decode(),
        event.occurred_at,
        raw.decode(),
    )
    return []


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
