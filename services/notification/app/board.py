"""The fulfillment board's actions: each becomes the public command that already exists for it —
never a write to another service's data — recorded with the key that took it.

- move a shipment to a later stage: `FulfillmentUpdate` (what warehouses send);
- release or reject a held order: `HoldDecision` (what support sends);
- cancel an order or some of its lines: `CancelRequested` (what channels send);
- redeliver a dead webhook: `RedeliveryRequested` (what `baton webhooks redeliver` sends).

Only an `operator` key acts; a key acts only on orders of its channels (anything else looks like it
does not exist), and only a key for every channel redelivers webhooks (they are not per channel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID, uuid4

from libs.contracts.envelope import Contract
from libs.contracts.fulfillment import FulfillmentUpdate
from libs.contracts.notification import RedeliveryRequested
from libs.contracts.orders import CancelRequested, HoldDecision, ShipmentLine
from services.notification.domain.api_keys import ApiKey
from services.notification.domain.board import Card, Pipeline, may_move

ON_HOLD = "on_hold"
"""The status of an order waiting for a hold decision."""

Action = Literal["move", "release", "reject", "cancel", "redeliver"]


class ActionRefused(Exception):
    """An action the board does not publish; ``status`` is the HTTP answer (403, 404 or 409)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class OperatorAction:
    """One action as recorded, and the command it publishes."""

    action_id: UUID
    key_id: str
    key_name: str
    action: Action
    order_id: UUID | None
    subject: str
    command: Contract


@dataclass(frozen=True)
class ShipmentPlace:
    """Where a parcel is, as the public stage events told notification."""

    shipment_id: str
    order_id: UUID
    channel: str | None
    pipeline: str
    stage: str | None


@dataclass(frozen=True)
class OrderSummary:
    order_id: UUID
    channel: str
    external_id: str
    status: str


class BoardQueries(Protocol):
    """What the board reads from notification's read model (folded from public events)."""

    async def cards(self, pipeline: str, last_stage: str | None = None) -> Sequence[Card]:
        """The parcels in ``pipeline`` still in a stage, of orders not cancelled (a bounded number per
        stage: the longest waiting, but the latest arrived in ``last_stage``)."""
        ...

    async def shipment(self, shipment_id: str) -> ShipmentPlace | None: ...

    async def summary(self, order_id: UUID) -> OrderSummary | None: ...


class BoardReads(BoardQueries, Protocol):
    """What the board's pages read beyond what its actions need."""

    async def held(self, channels: frozenset[str] | None) -> tuple[int, list[dict[str, Any]]]:
        """How many orders of ``channels`` (None: all) are on hold, and the oldest of them."""
        ...

    async def dead_deliveries(self) -> tuple[int, list[dict[str, Any]]]:
        """How many webhook deliveries are dead, and the oldest of them."""
        ...

    async def order_activity(self, order_id: UUID) -> dict[str, list[dict[str, Any]]]:
        """The order's webhook attempts, e-mails and board actions (keys `webhooks`, `emails`, `actions`)."""
        ...


class OperatorActions(Protocol):
    async def publish(self, action: OperatorAction) -> None:
        """Record the action and queue its command for Kafka in one transaction."""
        ...


def _acting(key: ApiKey) -> None:
    if not key.may_act:
        raise ActionRefused("this key is a viewer's: actions need an operator key", 403)


async def move_shipment(
    key: ApiKey,
    shipment_id: str,
    target: str,
    pipelines: Mapping[str, Pipeline],
    board: BoardQueries,
    actions: OperatorActions,
    now: datetime,
) -> OperatorAction:
    """Forward only, within the parcel's own pipeline: fulfillment would dead-letter anything else."""
    _acting(key)
    place = await board.shipment(shipment_id)
    if place is None or place.channel is None or not key.may_read(place.channel):
        raise ActionRefused(f"no shipment {shipment_id}", 404)
    pipeline = pipelines.get(place.pipeline)
    if pipeline is None:
        raise ActionRefused(f"pipeline {place.pipeline!r} is not in the pipelines file the board reads")
    if why := may_move(pipeline, place.stage, target):
        raise ActionRefused(why)
    command = FulfillmentUpdate(
        shipment_id=shipment_id,
        update_id=f"board-{uuid4()}",
        stage=target,
        occurred_at=now,
        note=f"moved on the board by {key.who}",
    )
    return await _publish(actions, key, "move", place.order_id, shipment_id, command)


async def decide_hold(
    key: ApiKey,
    order_id: UUID,
    decision: Literal["release", "reject"],
    reason: str,
    board: BoardQueries,
    actions: OperatorActions,
) -> OperatorAction:
    """Only for an order that is held now (a decision on any other changes nothing anyway)."""
    _acting(key)
    order = await _readable(key, order_id, board)
    if order.status != ON_HOLD:
        raise ActionRefused(f"order {order_id} is {order.status}, not on hold")
    command = HoldDecision(
        order_id=order_id, decision=decision, decided_by=key.who, reason=reason, decision_id=uuid4()
    )
    return await _publish(actions, key, decision, order_id, str(order_id), command)


async def cancel_order(
    key: ApiKey,
    order_id: UUID,
    lines: Sequence[ShipmentLine] | None,
    reason: str,
    board: BoardQueries,
    actions: OperatorActions,
) -> OperatorAction:
    """The whole order (``lines`` None) or some lines; fulfillment refuses what has already shipped
    and the outcome appears on `orders.cancellations.v1` and in the order's status."""
    _acting(key)
    await _readable(key, order_id, board)
    command = CancelRequested(
        request_id=f"board-{uuid4()}",
        order_id=order_id,
        lines=list(lines) if lines else None,
        reason=reason or f"cancelled on the board by {key.who}",
    )
    return await _publish(actions, key, "cancel", order_id, str(order_id), command)


async def redeliver_webhook(key: ApiKey, delivery_id: str, actions: OperatorActions) -> OperatorAction:
    """Webhook subscriptions are not per channel: only a key for every channel redelivers."""
    _acting(key)
    if not key.reads_all:
        raise ActionRefused("redelivering webhooks needs a key for every channel (`--all`)", 403)
    command = RedeliveryRequested(delivery_id=delivery_id)
    return await _publish(actions, key, "redeliver", None, delivery_id, command)


async def _readable(key: ApiKey, order_id: UUID, board: BoardQueries) -> OrderSummary:
    order = await board.summary(order_id)
    if order is None or not key.may_read(order.channel):
        raise ActionRefused(f"no order {order_id}", 404)
    return order


async def _publish(
    actions: OperatorActions,
    key: ApiKey,
    action: Action,
    order_id: UUID | None,
    subject: str,
    command: Contract,
) -> OperatorAction:
    done = OperatorAction(uuid4(), key.key_id, key.name, action, order_id, subject, command)
    await actions.publish(done)
    return done
