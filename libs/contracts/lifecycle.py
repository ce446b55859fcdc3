"""Internal facts about an order, on the facts topics of the services that handle them (key = order id).

Each service writes what it decided; the topology (`topology.py`) sends each fact to the
`<service>.facts.v1` topic of every service that handles it, and intake turns the facts into the
public, versioned status stream. Keyed by order id, one order's facts stay in causal order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from libs.contracts.envelope import Event, Text
from libs.contracts.orders import OrderDetails, Reason, Shipment, ShipmentLine
from libs.contracts.payments import PaymentState


class OrderFact(Event):
    order_id: UUID

    def partition_key(self) -> str:
        return str(self.order_id)


class OrderReceived(OrderFact):
    """Intake accepted a channel's order under its stable id: validation checks it."""

    event_type: Literal["order.received"] = "order.received"
    order: OrderDetails


class OrderValidated(OrderFact):
    """Validation found nothing wrong (or support released a held order): allocation sources it."""

    event_type: Literal["order.validated"] = "order.validated"
    order: OrderDetails


class OrderRejected(OrderFact):
    """Validation found faults (every failed rule in ``reasons``), or support rejected a held order."""

    event_type: Literal["order.rejected"] = "order.rejected"
    reasons: list[Reason]


class OrderHeld(OrderFact):
    """The order waits for support's decision on `orders.hold-decisions.v1` (e.g. a large first order)."""

    event_type: Literal["order.held"] = "order.held"
    reasons: list[Reason]


class OrderAllocated(OrderFact):
    """The order's complete current set of shipments (after a partial cancel or re-sourcing too)."""

    event_type: Literal["order.allocated"] = "order.allocated"
    shipments: list[Shipment]
    order: OrderDetails
    cancel_request_id: Text | None = Field(default=None, description="Set when a partial cancel caused it")
    backordered_lines: list[ShipmentLine] = Field(
        default_factory=list,
        description="Lines still waiting for stock (a failed parcel that could not be sourced again)",
    )
    edit_request_id: Text | None = Field(default=None, description="Set when an accepted edit caused it")


class OrderBackordered(OrderFact):
    """Stock cannot cover the order now; allocation allocates it, oldest first, when stock arrives."""

    event_type: Literal["order.backordered"] = "order.backordered"
    reasons: list[Reason]
    cancel_request_id: Text | None = None
    """Set when what waits for stock is all that is left after a cancel of some lines (additive)."""


class CancelFact(OrderFact):
    request_id: Text
    lines: list[ShipmentLine] | None = None
    reason: Text = ""


class OrderCancelRequested(CancelFact):
    """Intake resolved a cancel request to this order (written once per request id)."""

    event_type: Literal["order.cancel-requested"] = "order.cancel-requested"


class OrderCancelForwarded(CancelFact):
    """Allocation: stock is reserved, so fulfillment decides whether it is still cancellable."""

    event_type: Literal["order.cancel-forwarded"] = "order.cancel-forwarded"


class OrderCancelAccepted(CancelFact):
    """Fulfillment took these shipment lines out of their pipelines; allocation releases them."""

    event_type: Literal["order.cancel-accepted"] = "order.cancel-accepted"
    release: list[Shipment]
    whole: bool


class OrderCancelRefused(CancelFact):
    """The cancel request cannot be honoured (e.g. `already_shipped`); nothing changed."""

    event_type: Literal["order.cancel-refused"] = "order.cancel-refused"
    reasons: list[Reason]


class OrderCancelled(OrderFact):
    """Allocation cancelled the whole order and released what it held."""

    event_type: Literal["order.cancelled"] = "order.cancelled"
    request_id: Text = Field(
        description="The cancel request it carries out; empty when Baton cancelled it (e.g. `payment_timeout`)"
    )
    reasons: list[Reason] = Field(default_factory=list)


class EditFact(OrderFact):
    request_id: Text
    order: OrderDetails = Field(description="The order as the edit would make it")


class OrderEditRequested(EditFact):
    """Intake resolved an edit request (once per request id): validation checks the edited order."""

    event_type: Literal["order.edit-requested"] = "order.edit-requested"
    previous_lines: list[ShipmentLine] | None = Field(
        default=None,
        description="The order's lines before the edit (sku and units), so per-day limits see the "
        "day's units without this order's own; absent from intakes that predate it",
    )


class OrderEditValidated(EditFact):
    """The edited order passes validation: allocation checks that its stock can be reserved."""

    event_type: Literal["order.edit-validated"] = "order.edit-validated"


class OrderEditForwarded(EditFact):
    """Allocation can reserve the edited order: fulfillment decides whether it is still editable."""

    event_type: Literal["order.edit-forwarded"] = "order.edit-forwarded"


class OrderEditAccepted(EditFact):
    """Fulfillment took every shipment of the order out of its pipeline (none had shipped):
    allocation releases them and reserves the edited order."""

    event_type: Literal["order.edit-accepted"] = "order.edit-accepted"
    release: list[Shipment]


class OrderEditRefused(OrderFact):
    """The edit cannot be made (invalid, not enough stock, already shipped, ...); nothing changed."""

    event_type: Literal["order.edit-refused"] = "order.edit-refused"
    request_id: Text
    reasons: list[Reason]


class OrderFulfillmentProgressed(OrderFact):
    """Fulfillment: the order as a whole moved (first shipment in, all shipped, all delivered)."""

    event_type: Literal["order.fulfillment-progressed"] = "order.fulfillment-progressed"
    status: Literal[
        "in_fulfillment", "partially_shipped", "shipped", "delivered", "ready_for_pickup", "refunded"
    ]
    """`refunded` (additive): every parcel still on its way was lost in transit and refunded."""
    shipments: list[Shipment]
    eta: datetime | None = None
    awaiting_stock: bool = False
    """Part of the order is in no shipment: a parcel failed and its lines are sourced again or wait
    for stock (additive). The customer's status says so rather than listing only what moves."""


class ShipmentShipped(OrderFact):
    """The parcel left the location: its reserved units leave the stock."""

    event_type: Literal["shipment.shipped"] = "shipment.shipped"
    shipment_id: Text
    location_id: Text
    lines: list[ShipmentLine]


class ShipmentFailed(OrderFact):
    """The location cannot fulfil the shipment: write the units off there and source them again."""

    event_type: Literal["shipment.failed"] = "shipment.failed"
    shipment_id: Text
    location_id: Text
    lines: list[ShipmentLine]
    reason: Text


class OrderPaymentChanged(OrderFact):
    """Intake: the payment provider moved the order's payment (once per payment event id)."""

    event_type: Literal["order.payment-changed"] = "order.payment-changed"
    payment_event_id: Text
    status: PaymentState


class OrderReserved(OrderFact):
    """Allocation reserved the order's stock while its payment is pending; it is released at
    ``expires_at`` unless the payment is authorized first."""

    event_type: Literal["order.reserved"] = "order.reserved"
    shipments: list[Shipment]
    expires_at: datetime
    cancel_request_id: Text | None = None
    """Set when this reservation is what is left after a cancel of some lines (additive)."""


class ShipmentLost(OrderFact):
    """A parcel that shipped will not arrive (a carrier's exception): allocation writes its units off
    at the location it left and, when ``reship``, sources them again as a new shipment."""

    event_type: Literal["shipment.lost"] = "shipment.lost"
    shipment_id: Text
    location_id: Text
    lines: list[ShipmentLine]
    exception: Text = Field(description="`lost`, `damaged` or `returned_to_sender`")
    reship: bool


LifecycleFact = Annotated[
    OrderReceived
    | OrderValidated
    | OrderRejected
    | OrderHeld
    | OrderAllocated
    | OrderBackordered
    | OrderCancelRequested
    | OrderCancelForwarded
    | OrderCancelAccepted
    | OrderCancelRefused
    | OrderCancelled
    | OrderEditRequested
    | OrderEditValidated
    | OrderEditForwarded
    | OrderEditAccepted
    | OrderEditRefused
    | OrderFulfillmentProgressed
    | ShipmentShipped
    | ShipmentFailed
    | OrderPaymentChanged
    | OrderReserved,
    Field(discriminator="event_type"),
]
