"""Returns (RMA): a customer asks to send units of a delivered order back, Baton authorizes or
refuses, a warehouse receives what came back, and the refund is handed to payments.

requested (`returns.requested.v1`, channels) -> authorized | refused (`returns.status.v1`)
-> received (`returns.received.v1`, warehouses) -> received (`returns.status.v1`), with the refund
on `payments.refund-requested.v1` and the order `partially_returned` or `returned`.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from libs.contracts.envelope import Contract, Event, Money, Text
from libs.contracts.lifecycle import OrderFact
from libs.contracts.orders import Reason, ShipmentLine
from libs.contracts.vocabulary import ReturnCondition, ReturnStatus

RETURN_ID = r"^[A-Za-z0-9_.:\-]+$"


class ReturnLine(Contract):
    sku: Text = Field(min_length=1, max_length=100)
    quantity: int = Field(gt=0, le=100_000)


class ReturnRequested(Contract):
    """On `returns.requested.v1` (key = order id): the customer wants to send these units back.

    Decided once per ``return_id`` (a repeat changes nothing, whatever it says): authorized when the
    order was delivered, within its channel's return window (`returns.window_days` after delivery),
    and asks for no more of a sku than was delivered and not already on another return.
    """

    return_id: Text = Field(min_length=1, max_length=200, pattern=RETURN_ID)
    order_id: UUID
    lines: list[ReturnLine] = Field(min_length=1, max_length=500)
    reason: Text = Field(
        default="",
        max_length=2000,
        description="The customer's words: Baton keeps them in none of its stores or events (only this "
        "topic's retention has them)",
    )


class ReceivedLine(ReturnLine):
    condition: ReturnCondition = Field(
        description="`resellable`: back into stock at the receiving location; `damaged`: written off"
    )


class ReturnReceived(Contract):
    """On `returns.received.v1` (key = return id): a warehouse received an authorized return's parcel.

    Applied once per ``return_id``; the lines are what arrived (no more than was authorized), each
    with its condition. Units that did not arrive are not refunded.
    """

    return_id: Text = Field(min_length=1, max_length=200, pattern=RETURN_ID)
    location_id: Text = Field(min_length=1, max_length=100, description="Where the parcel was received")
    lines: list[ReceivedLine] = Field(min_length=1, max_length=500)


class ReturnStatusChanged(Event):
    """On `returns.status.v1` (key = order id): a return was authorized, refused, or received.

    ``lines`` are the units the return is about (as requested); on `received`, ``received`` says
    what arrived in which condition and ``refund`` the amount requested from payments.
    """

    event_type: Literal["return.status-changed"] = "return.status-changed"
    return_id: Text
    order_id: UUID
    status: ReturnStatus
    lines: list[ReturnLine]
    reasons: list[Reason] = Field(default_factory=list, description="Why a return was refused")
    location_id: Text | None = Field(default=None, description="Where it was received")
    received: list[ReceivedLine] = Field(default_factory=list)
    refund: Money | None = Field(default=None, description="The refund requested, once received")
    currency: Text | None = None

    def partition_key(self) -> str:
        return str(self.order_id)


class ReturnArrived(OrderFact):
    """Fulfillment: returned units arrived at ``location_id``; allocation puts the resellable ones
    back into stock there (waking backorders) and writes the damaged ones off, once per return."""

    event_type: Literal["return.arrived"] = "return.arrived"
    return_id: Text
    location_id: Text
    restock: list[ShipmentLine] = Field(default_factory=list)
    write_off: list[ShipmentLine] = Field(default_factory=list)


class OrderReturned(OrderFact):
    """Fulfillment: a return of the order was received; the order is `returned` when every unit
    delivered has come back, else `partially_returned`."""

    event_type: Literal["order.returned"] = "order.returned"
    status: Literal["partially_returned", "returned"]
    return_id: Text
    lines: list[ShipmentLine]
