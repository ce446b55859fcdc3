"""The hand-off to payments: Baton asks for money to go back to the customer; payments moves it."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from libs.contracts.envelope import Contract, Event, Money, Text


class RefundLine(Contract):
    sku: Text
    quantity: int = Field(gt=0)
    unit_price: Money = Field(description="What the customer paid per unit (the order line's price)")
    amount: Money = Field(description="unit_price x quantity")


class RefundRequested(Event):
    """On `payments.refund-requested.v1` (key = order id): refund these units of the order.

    ``refund_id`` is stable per cause (`return:<return id>`, `lost:<shipment id>`): Baton asks once,
    and a payments system that sees the same id again must not pay twice. ``amount`` is the sum of
    the lines plus ``shipping`` (the order's shipping price when the channel's policy refunds it).
    """

    event_type: Literal["payment.refund-requested"] = "payment.refund-requested"
    refund_id: Text
    order_id: UUID
    cause: Literal["return", "in_transit_exception"] = Field(
        default="return",
        description="Why: a received return, or a parcel lost, damaged or returned to sender in transit",
    )
    return_id: Text | None = None
    shipment_id: Text | None = Field(default=None, description="The parcel, for an in-transit exception")
    payment_reference: Text = Field(description="The payment provider's reference from the order")
    currency: Text
    lines: list[RefundLine]
    shipping: Money = Field(description="Shipping refunded with the lines (zero when it is not)")
    amount: Money

    def partition_key(self) -> str:
        return str(self.order_id)
