"""The gateway's use cases: an order, a cancel or an edit request over HTTP becomes one record on the topic a
channel would have written itself, once the caller's key may act for that channel."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from libs.api_keys import ApiKey
from libs.contracts.identity import order_id_for
from libs.contracts.orders import (
    Address,
    CancelRequested,
    EditRequested,
    OrderLine,
    OrderSubmitted,
    Payment,
    ShipmentLine,
)
from services.gateway.app.ports import OrderCommands
from services.gateway.domain.requests import Refusal, idempotency_refusal, scope_refusal, sole_channel


@dataclass(frozen=True)
class Accepted:
    """The broker has the record: intake will apply it. ``order_id`` is the id intake gives it."""

    order_id: UUID
    request_id: str | None = None


async def submit_order(
    order: OrderSubmitted, key: ApiKey, idempotency_key: str | None, commands: OrderCommands
) -> Accepted | Refusal:
    """Publish the order for its channel; the answer carries the id intake will give it (the same
    for every retry, so a resubmission is recognised, never a second order)."""
    if refusal := scope_refusal(key, order.channel) or idempotency_refusal(
        idempotency_key, order.channel, order.external_id
    ):
        return refusal
    await commands.submit(order)
    return Accepted(order_id_for(order.channel, order.external_id))


@dataclass(frozen=True)
class CancelOrder:
    """A cancel request as the caller sent it: the whole order, or some of its lines."""

    order_id: UUID
    request_id: str | None
    lines: list[ShipmentLine] | None
    reason: str
    channel: str | None


def _request_for(
    request_id: str | None, channel: str | None, key: ApiKey, idempotency_key: str | None
) -> tuple[str, str] | Refusal:
    """The request id (from the body or the `Idempotency-Key` header, the same when both are sent)
    and the channel the key acts for, or why the request cannot be taken."""
    if request_id and idempotency_key and request_id != idempotency_key:
        return Refusal(422, "Idempotency-Key and request_id differ: send one, or the same in both")
    request_id = request_id or idempotency_key
    if not request_id:
        return Refusal(422, "a request id is required: `request_id` in the body or an Idempotency-Key header")
    channel = channel or sole_channel(key)
    if channel is None:
        return Refusal(422, "name the order's `channel`: this key acts for several")
    if refusal := scope_refusal(key, channel):
        return refusal
    return request_id, channel


async def cancel_order(
    command: CancelOrder, key: ApiKey, idempotency_key: str | None, commands: OrderCommands
) -> Accepted | Refusal:
    """Publish `orders.cancel-requested.v1` naming the order and the channel the key acts for, so
    intake cancels only an order of that channel (another channel's is refused as unknown)."""
    resolved = _request_for(command.request_id, command.channel, key, idempotency_key)
    if isinstance(resolved, Refusal):
        return resolved
    request_id, channel = resolved
    request = CancelRequested(
        request_id=request_id,
        order_id=command.order_id,
        channel=channel,
        lines=command.lines,
        reason=command.reason,
    )
    await commands.cancel(request)
    return Accepted(command.order_id, request_id)


@dataclass(frozen=True)
class EditOrder:
    """An edit request as the caller sent it: a new address, the complete new lines, or both."""

    order_id: UUID
    request_id: str | None
    shipping_address: Address | None
    lines: list[OrderLine] | None
    payment: Payment | None
    reason: str
    channel: str | None


async def edit_order(
    command: EditOrder, key: ApiKey, idempotency_key: str | None, commands: OrderCommands
) -> Accepted | Refusal:
    """Publish `orders.edit-requested.v1` naming the order and the channel the key acts for, like a
    cancel; the outcome comes on `orders.edits.v1`. An edit that changes nothing is refused here
    (intake would dead-letter it)."""
    if command.shipping_address is None and command.lines is None:
        return Refusal(422, "an edit changes the `shipping_address`, the `lines`, or both")
    resolved = _request_for(command.request_id, command.channel, key, idempotency_key)
    if isinstance(resolved, Refusal):
        return resolved
    request_id, channel = resolved
    request = EditRequested(
        request_id=request_id,
        order_id=command.order_id,
        channel=channel,
        shipping_address=command.shipping_address,
        lines=command.lines,
        payment=command.payment,
        reason=command.reason,
    )
    await commands.edit(request)
    return Accepted(command.order_id, request_id)
