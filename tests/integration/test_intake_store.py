"""Intake's PostgreSQL adapter on the real database: the guarantees the fake only imitates, and the
statements a batch costs, counted by asyncpg's query logger."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import pytest

from libs.contracts.lifecycle import OrderCancelled, OrderValidated
from libs.contracts.orders import OrderDetails, OrderStatusChanged, OrderSubmitted
from libs.contracts.vocabulary import OrderStatus
from libs.platform.db import ensure_database, migrate
from libs.platform.stack import POSTGRES_PORT, external_database
from services.intake.adapters.store import PgIntakeUnit
from services.intake.app.ports import NewOrder
from services.intake.app.use_cases import details_of, publish_statuses, record_submissions, status_changed
from services.intake.domain.orders import order_id_for, receive
from tests.support.infra import fresh_name
from tests.support.orders import order

pytestmark = pytest.mark.integration

Connect = Callable[[], Any]


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[], Any]]:
    """Connections to a fresh database with intake's migrations applied; dropped afterwards."""
    server = (external_database() or f"postgresql://postgres@127.0.0.1:{POSTGRES_PORT}/postgres").rsplit(
        "/", 1
    )[0]
    name = fresh_name("intake")
    dsn = f"{server}/{name}"
    await ensure_database(dsn)
    opened: list[asyncpg.Connection] = []

    async def open_one() -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": "intake"})
        opened.append(conn)
        return conn

    try:
        await migrate(dsn, "intake", "services.intake.adapters.migrations")
        yield open_one
    finally:
        for conn in opened:
            await conn.close()
        admin = await asyncpg.connect(f"{server}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


class Statements:
    """What a connection sends to PostgreSQL, transaction control left out. The first time a
    connection sends a statement, asyncpg asks the server about its types (once per connection,
    cached after): warm the connection up with the same calls before counting."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.sent: list[str] = []
        conn.add_query_logger(self._log)

    def _log(self, query: Any) -> None:
        if query.query.split(None, 1)[0].strip(";").upper() not in {"BEGIN", "COMMIT", "ROLLBACK"}:
            self.sent.append(query.query)

    async def count(self) -> int:
        """How many so far (asyncpg calls loggers soon after the query, not during it)."""
        await asyncio.sleep(0)
        return len(self.sent)


def new_order(external_id: str, content: str = "v1") -> NewOrder:
    details = OrderDetails.model_validate(order(external_id, customer_id="c1", channel="web"))
    return NewOrder(details, f"fp-{external_id}-{content}", status_changed(receive("web", external_id)))


def submitted(external_id: str, **changes: Any) -> OrderSubmitted:
    return OrderSubmitted.model_validate(order(external_id, customer_id="c1", channel="web") | changes)


async def timeline(conn: asyncpg.Connection, order_id: object) -> list[tuple[int, str]]:
    rows = await conn.fetch(
        "SELECT version, status FROM status_history WHERE order_id = $1 ORDER BY version", order_id
    )
    return [(r["version"], r["status"]) for r in rows]


async def test_new_orders_and_their_first_versions_are_written_in_one_statement(connect: Connect) -> None:
    conn = await connect()
    uow = PgIntakeUnit(conn)
    orders = [new_order("a"), new_order("b"), new_order("c")]
    await uow.orders.add([new_order("warm-up")])
    counted = Statements(conn)
    assert await uow.orders.add(orders) == {}
    assert await counted.count() == 1
    for o in orders:
        assert await timeline(conn, o.order_id) == [(1, "received")]
        found = await uow.orders.find(o.order_id)
        assert found is not None and (found.status, found.version) == (OrderStatus.RECEIVED, 1)
        assert found.received_at is not None
    stored = await conn.fetchval("SELECT details::text FROM orders WHERE order_id = $1", orders[0].order_id)
    assert OrderDetails.model_validate_json(stored) == orders[0].details


async def test_orders_on_file_come_back_with_their_first_fingerprint_and_stay_as_they_were(
    connect: Connect,
) -> None:
    conn = await connect()
    uow = PgIntakeUnit(conn)
    await uow.orders.add([new_order("a")])
    again, fresh = new_order("a", "v2"), new_order("b")
    assert await uow.orders.add([again, fresh]) == {again.order_id: "fp-a-v1"}
    assert (
        await conn.fetchval("SELECT fingerprint FROM orders WHERE order_id = $1", again.order_id) == "fp-a-v1"
    )
    assert await timeline(conn, again.order_id) == [(1, "received")]
    assert await timeline(conn, fresh.order_id) == [(1, "received")]


async def waits_for_a_lock(observer: asyncpg.Connection, waiter: asyncpg.Connection, task: object) -> None:
    pid = waiter.get_server_pid()
    for _ in range(300):
        if await observer.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        ):
            break
        await asyncio.sleep(0.05)
    assert (
        await observer.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid) == "Lock"
    )
    assert isinstance(task, asyncio.Task) and not task.done()


async def test_an_order_another_process_records_meanwhile_comes_back_with_its_fingerprint(
    connect: Connect,
) -> None:
    """The other transaction commits while this one's insert waits for it: the row is not in this
    statement's snapshot, so the adapter reads it again rather than calling it new or unknown."""
    first, second, observer = await connect(), await connect(), await connect()
    tx = first.transaction()
    await tx.start()
    await PgIntakeUnit(first).orders.add([new_order("a", "theirs")])

    async def ours() -> dict[Any, str]:
        async with second.transaction():
            return await PgIntakeUnit(second).orders.add([new_order("a", "ours"), new_order("b")])

    racing = asyncio.create_task(ours())
    await waits_for_a_lock(observer, second, racing)
    await tx.commit()
    assert await racing == {new_order("a").order_id: "fp-a-theirs"}
    assert await timeline(observer, new_order("a").order_id) == [(1, "received")]
    assert await timeline(observer, new_order("b").order_id) == [(1, "received")]


async def test_new_versions_are_written_in_one_statement_and_the_latest_is_the_current_status(
    connect: Connect,
) -> None:
    conn = await connect()
    uow = PgIntakeUnit(conn)
    a, b, warm = new_order("a"), new_order("b"), new_order("warm-up")
    await uow.orders.add([a, b, warm])
    await uow.orders.record_statuses(
        [status_changed(dataclasses.replace(receive("web", "warm-up"), version=2))]
    )
    async with conn.transaction():
        locked = await uow.orders.lock([a.order_id, b.order_id, new_order("ghost").order_id])
        assert set(locked) == {a.order_id, b.order_id}
        counted = Statements(conn)
        changes: list[OrderStatusChanged] = []
        for order_id, statuses in ((a.order_id, ["validated", "allocated"]), (b.order_id, ["rejected"])):
            current = locked[order_id]
            for version, status in enumerate(statuses, start=current.version + 1):
                moved = dataclasses.replace(current, status=OrderStatus(status), version=version)
                changes.append(status_changed(moved))
        await uow.orders.record_statuses(changes)
        assert await counted.count() == 1
    assert await timeline(conn, a.order_id) == [(1, "received"), (2, "validated"), (3, "allocated")]
    found = await uow.orders.find_by_channel("web", "a")
    assert found is not None and (found.status, found.version) == (OrderStatus.ALLOCATED, 3)
    rejected = await uow.orders.find(b.order_id)
    assert rejected is not None and (rejected.status, rejected.version) == (OrderStatus.REJECTED, 2)


async def test_a_version_written_twice_fails_rather_than_forking_the_timeline(connect: Connect) -> None:
    conn = await connect()
    uow = PgIntakeUnit(conn)
    a = new_order("a")
    await uow.orders.add([a])
    again = status_changed(receive("web", "a"))
    with pytest.raises(asyncpg.UniqueViolationError):
        await uow.orders.record_statuses([again])


async def test_a_cancel_request_is_claimed_once(connect: Connect) -> None:
    conn = await connect()
    uow = PgIntakeUnit(conn)
    a = new_order("a")
    await uow.orders.add([a])
    assert await uow.cancel_requests.claim("cx-1", a.order_id)
    assert not await uow.cancel_requests.claim("cx-1", a.order_id)


async def test_a_batch_of_submissions_and_of_facts_costs_two_statements_each_on_postgresql(
    connect: Connect,
) -> None:
    """The use cases on the real adapter: a batch with a retry and a conflict of one of its own
    orders (the erasures covering its customers looked up, the orders written), then the facts of
    the new orders (the orders locked, their new versions written)."""
    conn = await connect()
    uow = PgIntakeUnit(conn)
    batch: Sequence[OrderSubmitted] = [submitted(x) for x in ("a", "b", "c")]
    warm = submitted("warm-up")
    await record_submissions([warm], uow)
    await publish_statuses(
        [OrderValidated(order_id=order_id_for("web", "warm-up"), order=details_of(warm))], uow
    )
    counted = Statements(conn)
    async with conn.transaction():
        results = await record_submissions(
            [*batch, batch[0], batch[1].model_copy(update={"currency": "USD"})], uow
        )
    assert await counted.count() == 2
    assert [[type(e).__name__ for e in r] for r in results if not isinstance(r, BaseException)] == [
        ["OrderStatusChanged", "OrderReceived"],
        ["OrderStatusChanged", "OrderReceived"],
        ["OrderStatusChanged", "OrderReceived"],
        [],
        ["OrderRefused"],
    ]
    ids = [order_id_for("web", x) for x in ("a", "b", "c")]
    counted.sent.clear()
    async with conn.transaction():
        facts = [OrderValidated(order_id=i, order=details_of(s)) for i, s in zip(ids, batch, strict=True)]
        await publish_statuses([*facts, OrderCancelled(order_id=ids[0], request_id="cx")], uow)
    assert await counted.count() == 2  # the orders locked, their new versions written
    assert await timeline(conn, ids[0]) == [(1, "received"), (2, "validated"), (3, "cancelled")]
    assert await timeline(conn, ids[2]) == [(1, "received"), (2, "validated")]
