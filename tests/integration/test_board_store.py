"""The board's store on PostgreSQL: cards from the read model, an action and its command committed
together, and the change feed's NOTIFY reaching a listener only once a read-model change commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import orjson
import pytest

from libs.contracts.fulfillment import FulfillmentUpdate, StageChanged
from libs.contracts.orders import OrderStatusChanged, Shipment, ShipmentLine
from libs.contracts.vocabulary import OrderStatus
from libs.platform.db import create_pool, ensure_database, migrate, session_settings
from services.notification.adapters.board_store import ChangeFeed, PgBoardQueries, PgOperatorActions
from services.notification.adapters.store import PgNotificationUnit, SubscriptionCache
from services.notification.app.board import OperatorAction
from services.notification.app.use_cases import record_stage_changes, record_status_changes
from tests.support.infra import Infra, fresh_name

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.fixture
async def database(infra: Infra) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    dsn = infra.database_url(fresh_name("board"))
    await ensure_database(dsn)
    await migrate(dsn, "notification", "services.notification.adapters.migrations")
    pool = await create_pool(dsn, "notification", 4)
    try:
        yield dsn, pool
    finally:
        await pool.close()


async def apply(pool: asyncpg.Pool, use_case: Any, events: list[Any]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await use_case(events, PgNotificationUnit(conn, SubscriptionCache()))


def status(order_id: UUID, value: OrderStatus, version: int, shipments: list[Shipment]) -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id=order_id,
        channel="webshop",
        external_id=f"ext-{order_id.hex[:6]}",
        status=value,
        version=version,
        shipments=shipments,
        occurred_at=T0 + timedelta(minutes=version),
    )


def entered(order_id: UUID, shipment_id: str, stage: str, left: str | None = None) -> StageChanged:
    return StageChanged(
        order_id=order_id,
        shipment_id=shipment_id,
        pipeline="standard",
        left_stage=left,
        entered_stage=stage,
        change="moved" if left else "entered",
        occurred_at=T0,
    )


async def test_cards_are_the_parcels_their_order_still_lists_and_a_cancelled_order_has_none(
    database: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = database
    kept, cancelled = uuid4(), uuid4()
    parcel = Shipment(shipment_id="p1", location_id="wh", lines=[ShipmentLine(sku="MUG", quantity=2)])
    other = Shipment(shipment_id="p2", location_id="wh", lines=[ShipmentLine(sku="CUP", quantity=1)])
    await apply(
        pool,
        record_status_changes,
        [
            status(kept, OrderStatus.IN_FULFILLMENT, 4, [parcel]),
            status(cancelled, OrderStatus.CANCELLED, 5, [other]),
        ],
    )
    await apply(pool, record_stage_changes, [entered(kept, "p1", "new"), entered(cancelled, "p2", "new")])
    await apply(pool, record_stage_changes, [entered(kept, "p0-resourced", "new")])  # not in the order's list
    queries = PgBoardQueries(pool)

    [card] = await queries.cards("standard", "delivered")
    assert (card.shipment_id, card.stage, card.channel, card.status) == (
        "p1",
        "new",
        "webshop",
        "in_fulfillment",
    )
    assert card.lines == [{"sku": "MUG", "quantity": 2}]
    assert await queries.cards("express") == []
    place = await queries.shipment("p1")
    assert place is not None and (place.order_id, place.pipeline, place.stage) == (kept, "standard", "new")


async def test_an_action_and_its_command_commit_together_and_the_relay_is_woken(
    database: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = database
    woken: list[bool] = []
    actions = PgOperatorActions(pool, lambda topic: f"t1.{topic}", lambda: woken.append(True))
    order_id = uuid4()
    command = FulfillmentUpdate(shipment_id="p1", update_id="board-1", stage="packed", occurred_at=T0)
    await actions.publish(OperatorAction(uuid4(), "key_1", "desk", "move", order_id, "p1", command))

    async with pool.acquire() as conn:
        outbox = await conn.fetch("SELECT topic, key, value FROM outbox")
        recorded = await conn.fetchrow(
            "SELECT key_id, key_name, action, order_id, detail::text FROM operator_actions"
        )
    assert [(r["topic"], r["key"]) for r in outbox] == [("t1.fulfillment.updates.v1", "p1")]
    assert FulfillmentUpdate.model_validate_json(bytes(outbox[0]["value"])) == command
    assert (recorded["key_id"], recorded["key_name"], recorded["action"], recorded["order_id"]) == (
        "key_1",
        "desk",
        "move",
        order_id,
    )
    assert orjson.loads(recorded["detail"])["stage"] == "packed"
    assert woken == [True]


async def test_the_change_feed_hears_a_read_model_change_once_it_commits_and_not_a_rolled_back_one(
    database: tuple[str, asyncpg.Pool],
) -> None:
    dsn, pool = database
    feed = ChangeFeed(dsn, session_settings(dsn, "notification", "board-test"))
    feed.start()
    queue = feed.subscribe()
    order_id = uuid4()
    try:
        # The listener connects in the background: a committed change is heard once it listens.
        async def heard() -> str:
            while True:
                await apply(pool, record_stage_changes, [entered(order_id, f"p-{uuid4().hex[:6]}", "new")])
                try:
                    return await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    continue

        assert await asyncio.wait_for(heard(), timeout=30) == str(order_id)
        while not queue.empty():
            queue.get_nowait()

        class Abort(Exception):
            pass

        with pytest.raises(Abort):
            async with pool.acquire() as conn, conn.transaction():
                await record_stage_changes(
                    [entered(uuid4(), "rolled-back", "new")], PgNotificationUnit(conn, SubscriptionCache())
                )
                raise Abort
        committed = uuid4()
        await apply(pool, record_stage_changes, [entered(committed, "p-after", "new")])
        assert await asyncio.wait_for(queue.get(), timeout=10) == str(committed), (
            "the rolled-back change was heard"
        )
    finally:
        feed.unsubscribe(queue)
        await feed.stop()
