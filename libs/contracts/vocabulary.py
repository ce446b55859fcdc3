"""The words Baton's contracts and its domain code share: plain enums, no pydantic.

Domain code (pure, framework-free) and contracts use these same types, so each concept is defined
once: a status that exists in the contract exists in the state machine, and the other way round.
"""

from __future__ import annotations

from enum import StrEnum


class ShippingMethod(StrEnum):
    STANDARD = "standard"
    EXPRESS = "express"
    PICKUP = "pickup"
    """Click-and-collect: the customer collects the order at ``pickup_location_id`` (a store)."""


class LocationKind(StrEnum):
    WAREHOUSE = "warehouse"
    STORE = "store"
    DROPSHIP = "dropship"


class OrderStatus(StrEnum):
    """Where an order stands, as its customer should hear it.

    `partially_shipped` (added in schema version 1, additive): at least one parcel has left and
    some of the order has not — still in a pipeline, being sourced again after a parcel failed,
    or waiting for stock. Once part of an order has left it stays `partially_shipped` (with the
    current shipments, and reasons for what waits: `insufficient_stock` per line when it was
    backordered, `awaiting_stock` when a parcel left while another's lines are in no shipment) until
    every part has shipped; the parts that have not left can still be cancelled by lines.

    `ready_for_pickup` (additive): a click-and-collect order waits at its store; it becomes
    `delivered` when collected, `cancelled` (`not_collected`) when it waited too long.

    `awaiting_payment` (additive): the order's stock is reserved but its payment is still pending;
    it is fulfilled once the payment is authorized, and cancelled (`payment_timeout`) if the
    channel's reservation deadline passes first.

    `partially_returned` and `returned` (added in schema version 1, additive): a delivered order
    some of whose units came back on an authorized return (received by a warehouse), or all of them.

    `refunded` (additive): nothing of the order is on its way or delivered any more, because its
    channel refunds what a carrier reports lost, damaged or returned to sender, and that is what
    happened to every parcel still on its way (reason `in_transit_exception`). Final.
    """

    RECEIVED = "received"
    VALIDATED = "validated"
    REJECTED = "rejected"
    ON_HOLD = "on_hold"
    ALLOCATED = "allocated"
    BACKORDERED = "backordered"
    IN_FULFILLMENT = "in_fulfillment"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    AWAITING_PAYMENT = "awaiting_payment"
    READY_FOR_PICKUP = "ready_for_pickup"
    PARTIALLY_RETURNED = "partially_returned"
    RETURNED = "returned"
    REFUNDED = "refunded"


class CarrierException(StrEnum):
    """What a carrier may report about a parcel after it shipped (stage `exception`)."""

    LOST = "lost"
    DAMAGED = "damaged"
    RETURNED_TO_SENDER = "returned_to_sender"


class ReturnStatus(StrEnum):
    """Where a return (RMA) stands: decided once per return id, received once."""

    AUTHORIZED = "authorized"
    REFUSED = "refused"
    RECEIVED = "received"


class ReturnCondition(StrEnum):
    """How a returned unit arrived: `resellable` goes back into stock, `damaged` is written off."""

    RESELLABLE = "resellable"
    DAMAGED = "damaged"
