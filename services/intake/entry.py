"""Intake's inputs: channel submissions, and the lifecycle facts other services decide."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from pydantic import TypeAdapter

from libs.contracts import topics
from libs.contracts.lifecycle import LifecycleFact
from libs.contracts.orders import CancelRequested, OrderDetails, OrderSubmitted
from libs.platform.messaging import Incoming, Outgoing, Rejected, one_at_a_time, parse
from libs.platform.service import Runtime, Subscription
from services.intake.adapters.order_book import PgOrderBook
from services.intake.app.use_cases import (
    STATUS_FACTS,
    Topics,
    publish_statuses,
    record_submission,
    request_cancel,
)

SUBMITTED = TypeAdapter(OrderSubmitted)
CANCEL = TypeAdapter(CancelRequested)
FACT: TypeAdapter[LifecycleFact] = TypeAdapter(LifecycleFact)


def subscriptions(runtime: Runtime) -> list[Subscription]:
    t = Topics(
        status=runtime.topic(topics.ORDERS_STATUS),
        refused=runtime.topic(topics.ORDERS_REFUSED),
        lifecycle=runtime.topic(topics.ORDERS_LIFECYCLE),
        cancellations=runtime.topic(topics.ORDERS_CANCELLATIONS),
    )

    async def on_order_submitted(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        submitted = parse(SUBMITTED, record)
        order = OrderDetails.model_validate(submitted.model_dump(include=set(OrderDetails.model_fields)))
        return await record_submission(PgOrderBook(conn), order, t)

    async def on_order_facts(
        conn: asyncpg.Connection, records: Sequence[Incoming]
    ) -> list[list[Outgoing] | Rejected]:
        """The busiest input (four or five facts per order): applied set-based, three statements
        per batch instead of two per fact."""
        facts: list[LifecycleFact | Rejected] = []
        for record in records:
            try:
                facts.append(parse(FACT, record))
            except Rejected as rejected:
                facts.append(rejected)
        return await publish_statuses(PgOrderBook(conn), facts, t)

    async def on_cancel_requested(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        return await request_cancel(PgOrderBook(conn), parse(CANCEL, record), t)

    return [
        Subscription("cancel_requested", (topics.ORDERS_CANCEL_REQUESTED,), on_cancel_requested),
        Subscription("order_submitted", (topics.ORDERS_SUBMITTED,), on_order_submitted),
        Subscription(
            "order_fact",
            (topics.ORDERS_LIFECYCLE,),
            one_at_a_time(on_order_facts),
            STATUS_FACTS,
            batch_handler=on_order_facts,
        ),
    ]
