"""Order events: what channels submit, and the public status stream downstream teams follow."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from libs.contracts.envelope import Contract, Event, Money, Text
from libs.contracts.vocabulary import OrderStatus, ShippingMethod


class Customer(Contract):
    id: Text = Field(min_length=1, max_length=200, description="The channel's customer id")
    email: Text = Field(
        max_length=320,
        description="Where customer messages go: exactly one address (`name@example.com`); an order"
        " whose address is not one valid address is rejected by validation (`invalid_email`)",
    )
    name: Text = Field(min_length=1, max_length=300)


class Address(Contract):
    name: Text = Field(max_length=300, description="Recipient")
    line1: Text = Field(max_length=300)
    line2: Text | None = Field(default=None, max_length=300)
    city: Text = Field(max_length=200)
    postal_code: Text = Field(max_length=40)
    country: Text = Field(max_length=8, description="ISO-3166 alpha-2 country code, e.g. `DE`")
    lat: float | None = Field(default=None, description="Latitude, for distance-aware sourcing")
    lon: float | None = Field(default=None, description="Longitude, for distance-aware sourcing")


class OrderLine(Contract):
    sku: Text = Field(min_length=1, max_length=100)
    quantity: int = Field(description="Units ordered; must be positive (checked by validation)")
    unit_price: Money = Field(description="Price per unit the customer was shown")


class Payment(Contract):
    status: Text = Field(
        max_length=40,
        description="`authorized` or `captured` to proceed; `pending`: stock is reserved until the"
        " channel's deadline and `payments.updates.v1` moves it on; anything else rejects",
    )
    reference: Text = Field(max_length=200, description="The payment provider's reference")
    amount: Money = Field(description="Amount authorized, in the order's currency")


class OrderDetails(Contract):
    """The order as a channel placed it; carried on internal events so each service is self-sufficient."""

    channel: Text = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    external_id: Text = Field(min_length=1, max_length=200, description="The channel's own order id")
    placed_at: AwareDatetime
    customer: Customer
    shipping_address: Address
    shipping_method: ShippingMethod
    pickup_location_id: Text | None = Field(
        default=None,
        max_length=200,
        description="For shipping method `pickup`: the store the customer collects the order at",
    )
    currency: Text = Field(min_length=3, max_length=3, description="ISO-4217 code")
    lines: list[OrderLine] = Field(min_length=1, max_length=500)
    payment: Payment
    shipping_price: Money | None = Field(
        default=None,
        description="What the customer pays for shipping, included in the payment's amount (added in "
        "schema version 1, additive; none: shipping is free or priced into the lines). Refunded with "
        "a return that brings back the rest of the order when the channel's `returns.refund_shipping` says so",
    )

    @property
    def channel_key(self) -> str:
        return f"{self.channel}:{self.external_id}"


class OrderSubmitted(OrderDetails):
    """Published by a channel on `orders.submitted.v1`, key `<channel>:<external_id>`.

    The envelope fields are optional here: channels are outside Baton and may omit them.
    """

    event_id: UUID | None = Field(default=None, description="Optional; Baton assigns ids itself")
    event_type: Literal["order.submitted"] = "order.submitted"
    schema_version: int = 1


class Reason(Contract):
    """A machine-readable reason (``code``) with words for people; ``sku`` when one line is at fault."""

    code: Text = Field(description="e.g. `unknown_sku`, `price_mismatch`, `insufficient_stock`")
    message: Text
    sku: Text | None = None


class ShipmentLine(Contract):
    sku: Text
    quantity: int = Field(gt=0)


class Shipment(Contract):
    shipment_id: Text = Field(description="Stable id of one parcel from one location")
    location_id: Text
    lines: list[ShipmentLine]
    pipeline: Text | None = Field(default=None, description="Fulfillment pipeline, once in fulfillment")
    stage: Text | None = Field(default=None, description="Current pipeline stage, once in fulfillment")
    carrier: Text | None = None
    tracking_number: Text | None = None


class OrderStatusChanged(Event):
    """One message per status change on `orders.status.v1`, key = order id.

    ``version`` counts 1, 2, 3… per order with no gaps: a consumer that has seen version N can
    drop anything at or below N as a duplicate or an old event.
    """

    event_type: Literal["order.status-changed"] = "order.status-changed"
    order_id: UUID
    channel: Text
    external_id: Text
    status: OrderStatus
    version: int = Field(ge=1, description="Per-order sequence number, gapless")
    reasons: list[Reason] = Field(default_factory=list)
    shipments: list[Shipment] = Field(default_factory=list, description="Set when allocated")
    eta: datetime | None = Field(default=None, description="Expected delivery, once known")
    order: OrderDetails | None = Field(
        default=None,
        description="The order's details after an accepted edit, on the version the edit caused (new in"
        " v1, additive; absent otherwise)",
    )

    def partition_key(self) -> str:
        return str(self.order_id)


class OrderRefused(Event):
    """A submission that did not become an order, on `orders.refused.v1` (key `<channel>:<external_id>`).

    Sent when a channel reuses an external id for a different order.
    """

    event_type: Literal["order.refused"] = "order.refused"
    channel: Text
    external_id: Text
    existing_order_id: UUID | None = None
    reasons: list[Reason]

    def partition_key(self) -> str:
        return f"{self.channel}:{self.external_id}"


class HoldDecision(Contract):
    """Support's verdict on a held order, on `orders.hold-decisions.v1` (key = order id)."""

    order_id: UUID
    decision: Literal["release", "reject"]
    decided_by: Text = Field(min_length=1, max_length=200)
    reason: Text = Field(default="", max_length=2000)
    decision_id: UUID | None = Field(default=None, description="Idempotency key; repeated ids change nothing")


class CancelRequested(Contract):
    """On `orders.cancel-requested.v1`: cancel a whole order (no ``lines``) or some of its lines.

    Name the order by ``order_id`` or by ``channel`` + ``external_id``. Idempotent per ``request_id``.
    """

    request_id: Text = Field(min_length=1, max_length=200)
    order_id: UUID | None = None
    channel: Text | None = None
    external_id: Text | None = None
    lines: list[ShipmentLine] | None = Field(default=None, description="Omit to cancel the whole order")
    reason: Text = Field(default="", max_length=2000)


class CancellationOutcome(Event):
    """On `orders.cancellations.v1` (key = order id): what became of a cancel request."""

    event_type: Literal["order.cancellation-outcome"] = "order.cancellation-outcome"
    request_id: Text
    order_id: UUID | None
    outcome: Literal["accepted", "refused"]
    reasons: list[Reason] = Field(default_factory=list)

    def partition_key(self) -> str:
        """The order's id; a request for no known order is keyed by what it named."""
        return str(self.order_id) if self.order_id is not None else f"request:{self.request_id}"


class EditRequested(Contract):
    """On `orders.edit-requested.v1` (key = order id): change an order before it ships.

    Name the order by ``order_id`` or by ``channel`` + ``external_id``. Give a new
    ``shipping_address``, or the order's complete new ``lines`` (add, remove, change quantities; with
    the ``payment`` that covers them), or both. Accepted only while no shipment of the order has
    passed its pipeline's ship point; the order is validated again and its stock reserved again for
    the new lines. Idempotent per ``request_id``; the outcome comes on `orders.edits.v1`.
    """

    request_id: Text = Field(min_length=1, max_length=200)
    order_id: UUID | None = None
    channel: Text | None = None
    external_id: Text | None = None
    shipping_address: Address | None = Field(default=None, description="The new address")
    lines: list[OrderLine] | None = Field(
        default=None, min_length=1, max_length=500, description="The order's complete new lines"
    )
    payment: Payment | None = Field(default=None, description="The payment covering the new lines")
    reason: Text = Field(default="", max_length=2000)


class EditOutcome(Event):
    """On `orders.edits.v1` (key = order id): what became of an edit request; with the edited
    details when it was accepted (the order's status stream has a new version with them too)."""

    event_type: Literal["order.edit-outcome"] = "order.edit-outcome"
    request_id: Text
    order_id: UUID | None
    outcome: Literal["accepted", "refused"]
    reasons: list[Reason] = Field(default_factory=list)
    order: OrderDetails | None = Field(default=None, description="The order as edited (when accepted)")

    def partition_key(self) -> str:
        return str(self.order_id) if self.order_id is not None else f"request:{self.request_id}"


__all__ = [
    "Address",
    "Customer",
    "EditOutcome",
    "EditRequested",
    "HoldDecision",
    "OrderDetails",
    "OrderLine",
    "OrderRefused",
    "OrderStatus",
    "OrderStatusChanged",
    "OrderSubmitted",
    "Payment",
    "Reason",
    "Shipment",
    "ShipmentLine",
    "ShippingMethod",
]
