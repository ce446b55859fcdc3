"""Internal facts about an order, on `orders.lifecycle.v1` (key = order id).

Each service writes what it decided here; intake turns the facts into the public, versioned
status stream. One topic keyed by order id keeps every order's facts in causal order.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from libs.contracts.envelope import Event
from libs.contracts.orders import OrderDetails, Reason, Shipment


class OrderFact(Event):
    order_id: UUID


class OrderReceived(OrderFact):
    event_type: Literal["order.received"] = "order.received"
    order: OrderDetails


class OrderValidated(OrderFact):
    event_type: Literal["order.validated"] = "order.validated"
    order: OrderDetails


class OrderRejected(OrderFact):
    event_type: Literal["order.rejected"] = "order.rejected"
    reasons: list[Reason]


class OrderHeld(OrderFact):
    event_type: Literal["order.held"] = "order.held"
    reasons: list[Reason]


class OrderAllocated(OrderFact):
    event_type: Literal["order.allocated"] = "order.allocated"
    shipments: list[Shipment]
    order: OrderDetails


class OrderBackordered(OrderFact):
    event_type: Literal["order.backordered"] = "order.backordered"
    reasons: list[Reason]


LifecycleFact = Annotated[
    OrderReceived | OrderValidated | OrderRejected | OrderHeld | OrderAllocated | OrderBackordered,
    Field(discriminator="event_type"),
]
