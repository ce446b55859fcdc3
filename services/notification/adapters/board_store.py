"""The board's reads from notification's read model, its actions (recorded and queued in the outbox
in one transaction), and the live feed: PostgreSQL NOTIFY after each committed read-model change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from libs.contracts import headers
from libs.contracts.fulfillment import FulfillmentUpdate
from libs.contracts.notification import RedeliveryRequested
from libs.contracts.orders import CancelRequested, HoldDecision
from libs.contracts.topology import PUBLISHED_ON
from libs.platform.messaging import write_outbox
from libs.platform.records import Outgoing
from services.notification.app.board import OperatorAction, OrderSummary, ShipmentPlace
from services.notification.domain.board import Card

log = logging.getLogger("baton.notification.board")

BOARD_CHANNEL = "notification_board"
"""The NOTIFY channel the read model signals on: the payload is the order id that changed."""

CARDS_PER_COLUMN = 200
"""Cards shown per stage: the longest-waiting first (delivered parcels pile up in the last column)."""


async def signal_changes(conn: asyncpg.Connection, order_ids: Sequence[UUID]) -> None:
    """Delivered when the transaction commits (and not at all if it rolls back), once per order."""
    await conn.execute(
        "SELECT pg_notify($1, o::text) FROM (SELECT DISTINCT unnest($2::uuid[]) AS o) AS changed",
        BOARD_CHANNEL,
        list(order_ids),
    )


def _key_of(command: Any) -> str:
    """Each command's partition key, as its topic documents it."""
    if isinstance(command, FulfillmentUpdate):
        return command.shipment_id
    if isinstance(command, HoldDecision):
        return str(command.order_id)
    if isinstance(command, CancelRequested):
        return str(command.order_id)
    if isinstance(command, RedeliveryRequested):
        return command.delivery_id or command.subscription_id or ""
    raise TypeError(f"the board sends no {type(command).__name__}")


class PgOperatorActions:
    """Implements ``OperatorActions``: the action row and the outbox row commit together, and the
    relay is woken right after (the outbox relay publishes the command with acks=all)."""

    def __init__(
        self, pool: asyncpg.Pool, topic: Callable[[str], str], committed: Callable[[], None]
    ) -> None:
        self._pool = pool
        self._topic = topic
        self._committed = committed

    async def publish(self, action: OperatorAction) -> None:
        command = action.command
        value = command.model_dump_json()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO operator_actions (action_id, key_id, key_name, action, order_id, subject, detail)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
                action.action_id,
                action.key_id,
                action.key_name,
                action.action,
                action.order_id,
                action.subject,
                value,
            )
            await write_outbox(
                conn,
                [
                    Outgoing(
                        topic=self._topic(PUBLISHED_ON[type(command)]),
                        key=_key_of(command),
                        value=value.encode(),
                        headers={headers.CONTENT_TYPE: headers.JSON},
                    )
                ],
            )
        self._committed()


class PgBoardQueries:
    """Implements ``BoardQueries`` and the lists and order details the pages show."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def cards(self, pipeline: str, last_stage: str | None = None) -> list[Card]:
        """Parcels in a stage of ``pipeline`` that their order still lists (a cancelled or re-sourced
        parcel drops out of the order's shipments), of orders not cancelled: per stage the ones
        waiting longest, but in ``last_stage`` (where parcels stay) the latest to arrive."""
        rows = await self._pool.fetch(
            "SELECT * FROM (SELECT s.shipment_id, s.order_id, s.stage, s.updated_at, v.channel,"
            " v.external_id, v.status, sh.value::text AS shipment,"
            " row_number() OVER (PARTITION BY s.stage ORDER BY"
            " CASE WHEN s.stage = $3 THEN -extract(epoch FROM s.updated_at)"
            " ELSE extract(epoch FROM s.updated_at) END) AS n"
            " FROM shipment_stages s JOIN order_views v USING (order_id)"
            " CROSS JOIN LATERAL jsonb_array_elements(v.shipments) AS sh(value)"
            " WHERE s.pipeline = $1 AND s.stage IS NOT NULL AND v.status <> 'cancelled'"
            " AND sh.value ->> 'shipment_id' = s.shipment_id) AS shown WHERE n <= $2",
            pipeline,
            CARDS_PER_COLUMN,
            last_stage,
        )
        return [
            Card(
                shipment_id=r["shipment_id"],
                order_id=str(r["order_id"]),
                channel=r["channel"],
                external_id=r["external_id"],
                status=r["status"],
                stage=r["stage"],
                lines=orjson.loads(r["shipment"]).get("lines", []),
                since=r["updated_at"],
            )
            for r in rows
        ]

    async def shipment(self, shipment_id: str) -> ShipmentPlace | None:
        row = await self._pool.fetchrow(
            "SELECT s.shipment_id, s.order_id, s.pipeline, s.stage, v.channel"
            " FROM shipment_stages s LEFT JOIN order_views v USING (order_id) WHERE s.shipment_id = $1",
            shipment_id,
        )
        if row is None:
            return None
        return ShipmentPlace(
            row["shipment_id"], row["order_id"], row["channel"], row["pipeline"], row["stage"]
        )

    async def summary(self, order_id: UUID) -> OrderSummary | None:
        row = await self._pool.fetchrow(
            "SELECT order_id, channel, external_id, status FROM order_views WHERE order_id = $1", order_id
        )
        if row is None:
            return None
        return OrderSummary(row["order_id"], row["channel"], row["external_id"], row["status"])

    async def held(self, channels: frozenset[str] | None) -> tuple[int, list[dict[str, Any]]]:
        """Held orders (of ``channels``; None: all), oldest first, and how many there are."""
        rows = await self._pool.fetch(
            "SELECT order_id, channel, external_id, updated_at, count(*) OVER () AS total FROM order_views"
            " WHERE status = 'on_hold' AND ($1::text[] IS NULL OR channel = ANY($1))"
            " ORDER BY updated_at LIMIT 200",
            sorted(channels) if channels is not None else None,
        )
        return (rows[0]["total"] if rows else 0), [dict(r) for r in rows]

    async def dead_deliveries(self) -> tuple[int, list[dict[str, Any]]]:
        """Webhook deliveries that gave up (their attempts are on the order pages), oldest first."""
        rows = await self._pool.fetch(
            "SELECT delivery_id, subscription_id, event_key, attempts, last_error, created_at,"
            " convert_from(body, 'UTF8')::jsonb #>> '{data,order_id}' AS order_id,"
            " count(*) OVER () AS total FROM deliveries WHERE status = 'dead' ORDER BY created_at LIMIT 200"
        )
        return (rows[0]["total"] if rows else 0), [dict(r) for r in rows]

    async def order_activity(self, order_id: UUID) -> dict[str, list[dict[str, Any]]]:
        """Everything notification did for the order: webhook attempts, e-mails, board actions."""
        async with self._pool.acquire() as conn:
            webhooks = await conn.fetch(
                "SELECT d.delivery_id, d.subscription_id, d.event_key, d.status, a.attempt, a.attempted_at,"
                " a.status_code, a.error FROM deliveries d LEFT JOIN delivery_attempts a USING (delivery_id)"
                " WHERE convert_from(d.body, 'UTF8')::jsonb #>> '{data,order_id}' = $1"
                " ORDER BY d.created_at, a.attempt",
                str(order_id),
            )
            emails = await conn.fetch(
                "SELECT status, state, attempts, last_error, sent_at FROM emails WHERE order_id = $1"
                " ORDER BY next_attempt_at",
                order_id,
            )
            actions = await conn.fetch(
                "SELECT key_id, key_name, action, subject, detail::text AS detail, at FROM operator_actions"
                " WHERE order_id = $1 ORDER BY at",
                order_id,
            )
        return {
            "webhooks": [dict(r) for r in webhooks],
            "emails": [dict(r) for r in emails],
            "actions": [dict(r) for r in actions],
        }


class ChangeFeed:
    """One LISTEN connection per process, fanned out to every open board (a queue each). A board
    that falls behind loses nothing that matters: any signal makes it read the current state."""

    def __init__(self, dsn: str, server_settings: dict[str, str]) -> None:
        self._dsn = dsn
        self._server_settings = server_settings
        self._queues: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="board-change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=100)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self._queues.discard(queue)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(payload)

    async def _listen(self) -> None:
        """Listens again after a lost connection (boards refresh on the next change)."""
        delay = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, server_settings=self._server_settings)
                try:
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _, ended=lost: ended.set())
                    await conn.add_listener(BOARD_CHANNEL, self._on_notify)
                    delay = 0.5
                    await lost.wait()
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("board change feed reconnecting", extra={"error": type(exc).__name__})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
