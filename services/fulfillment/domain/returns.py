"""Returns (RMA) of delivered orders: authorize or refuse a request, then apply what came back. Pure.

Rules in words:
- A return is decided once per return id: authorized when fulfillment delivered the order, the
  request comes within the channel's return window (``window_days`` after the last parcel was
  delivered), and it asks for no more of a sku than was delivered and is not already on another
  return (authorized: the units asked for; received: the units that came back). Otherwise refused,
  with a reason: `not_delivered` (an order fulfillment never saw included), `return_window_closed`,
  `not_returnable`.
- A warehouse receives an authorized return once: no more of a sku than was authorized. Each line
  has a condition: `resellable` units go back into stock at the receiving location, `damaged`
  ones are written off. A receipt for a refused return is refused (`return_not_authorized`).
- Every unit that came back is refunded at the price the customer paid for it (the order line's
  unit price; the lowest when a sku was on several lines at different prices, never more than paid).
  The shipping price is refunded with the return that brings the last delivered unit back, when
  the channel's policy says so.
- The order is `returned` once every delivered unit has come back, else `partially_returned`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from services.fulfillment.domain.pipelines import PipelineConfig, Refusal
from services.fulfillment.domain.shipments import Lines, Order, Shipment

DELIVERED = "delivered"


class ReturnState(StrEnum):
    AUTHORIZED = "authorized"
    REFUSED = "refused"
    RECEIVED = "received"


class Condition(StrEnum):
    RESELLABLE = "resellable"
    DAMAGED = "damaged"


@dataclass(frozen=True)
class Terms:
    """What the customer paid, kept from the allocation for refunds."""

    order_id: UUID
    currency: str
    payment_reference: str
    prices: Mapping[str, Decimal]
    """Per sku, the unit price paid."""
    shipping_price: Decimal | None = None


@dataclass(frozen=True)
class ReceivedLine:
    sku: str
    quantity: int
    condition: Condition


@dataclass(frozen=True)
class Return:
    return_id: str
    order_id: UUID
    state: ReturnState
    lines: Lines
    """The units asked for, per sku."""
    refusal: Refusal | None = None
    location_id: str | None = None
    received: tuple[ReceivedLine, ...] = ()

    @property
    def holds(self) -> Lines:
        """The units this return takes from what may still be returned."""
        if self.state is ReturnState.AUTHORIZED:
            return self.lines
        if self.state is ReturnState.RECEIVED:
            return units_of(self.received)
        return {}


def units_of(lines: Iterable[ReceivedLine]) -> dict[str, int]:
    units: dict[str, int] = {}
    for line in lines:
        units[line.sku] = units.get(line.sku, 0) + line.quantity
    return units


def summed(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Units per sku, a sku given on several lines added up."""
    units: dict[str, int] = {}
    for sku, quantity in lines:
        units[sku] = units.get(sku, 0) + quantity
    return units


def delivered_units(shipments: Sequence[Shipment], config: PipelineConfig) -> dict[str, int]:
    """Per sku, the units of the parcels that reached the last stage of their pipeline."""
    units: dict[str, int] = {}
    for s in shipments:
        if s.stage == config.get(s.pipeline).last:
            for sku, quantity in s.lines.items():
                units[sku] = units.get(sku, 0) + quantity
    return units


def delivered_at(shipments: Sequence[Shipment], config: PipelineConfig) -> datetime | None:
    """When the last delivered parcel was delivered (the return window starts there)."""
    return max(
        (s.stage_entered_at for s in shipments if s.stage == config.get(s.pipeline).last), default=None
    )


def returnable(delivered: Mapping[str, int], returns: Iterable[Return]) -> dict[str, int]:
    """Per sku, the delivered units no other return holds."""
    left = dict(delivered)
    for r in returns:
        for sku, quantity in r.holds.items():
            left[sku] = left.get(sku, 0) - quantity
    return left


def decide_return(
    return_id: str,
    order: Order | None,
    shipments: Sequence[Shipment],
    others: Sequence[Return],
    lines: Sequence[tuple[str, int]],
    *,
    order_id: UUID,
    window_days: int,
    now: datetime,
    config: PipelineConfig,
) -> Return:
    """Authorize the return, or refuse it with the first rule it breaks."""
    asked = summed(lines)

    def refused(code: str, message: str) -> Return:
        return Return(return_id, order_id, ReturnState.REFUSED, asked, Refusal(code, message))

    if order is None:
        return refused("not_delivered", f"order {order_id} has not reached fulfillment")
    when = delivered_at(shipments, config)
    if order.progress != DELIVERED or when is None:
        return refused("not_delivered", f"order {order_id} is not delivered")
    if now > when + timedelta(days=window_days):
        return refused(
            "return_window_closed",
            f"delivered {when.date().isoformat()}, returns accepted {window_days} days",
        )
    left = returnable(delivered_units(shipments, config), others)
    for sku, quantity in sorted(asked.items()):
        if quantity > left.get(sku, 0):
            return refused(
                "not_returnable", f"{sku}: {quantity} asked, {max(left.get(sku, 0), 0)} may be returned"
            )
    return Return(return_id, order_id, ReturnState.AUTHORIZED, asked)


@dataclass(frozen=True)
class Refund:
    """What goes back to the customer for one received return."""

    lines: tuple[tuple[str, int, Decimal, Decimal], ...]
    """(sku, units, unit price, amount) in sku order."""
    shipping: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Received:
    """A receipt applied: the return as received, its refund, where stock goes, the order's status."""

    ret: Return
    refund: Refund
    restock: Lines
    write_off: Lines
    status: str
    """`returned` or `partially_returned`."""


def receive_return(
    ret: Return,
    location_id: str,
    lines: Sequence[ReceivedLine],
    others: Sequence[Return],
    shipments: Sequence[Shipment],
    terms: Terms,
    *,
    refund_shipping: bool,
    config: PipelineConfig,
) -> Received | Refusal:
    """Apply what arrived for an authorized return (``others``: the order's other returns)."""
    if ret.state is not ReturnState.AUTHORIZED:
        return Refusal("return_not_authorized", f"return {ret.return_id} is {ret.state}")
    arrived = units_of(lines)
    for sku, quantity in sorted(arrived.items()):
        if quantity > ret.lines.get(sku, 0):
            return Refusal(
                "more_than_authorized", f"{sku}: {quantity} received, {ret.lines.get(sku, 0)} authorized"
            )
    if unpriced := sorted(arrived.keys() - terms.prices.keys()):
        return Refusal("unknown_price", f"the order has no price for {', '.join(unpriced)}")
    merged: dict[tuple[str, Condition], int] = {}
    for line in lines:
        merged[(line.sku, line.condition)] = merged.get((line.sku, line.condition), 0) + line.quantity
    received = tuple(ReceivedLine(sku, q, c) for (sku, c), q in sorted(merged.items()))
    after = Return(ret.return_id, ret.order_id, ReturnState.RECEIVED, ret.lines, None, location_id, received)
    delivered = delivered_units(shipments, config)
    back = summed(
        (sku, q) for r in (*others, after) if r.state is ReturnState.RECEIVED for sku, q in r.holds.items()
    )
    complete = all(back.get(sku, 0) >= quantity for sku, quantity in delivered.items())
    refund_lines = tuple(
        (sku, q, terms.prices[sku], terms.prices[sku] * q) for sku, q in sorted(arrived.items())
    )
    shipping = (terms.shipping_price or Decimal(0)) if refund_shipping and complete else Decimal(0)
    refund = Refund(refund_lines, shipping, sum((line[3] for line in refund_lines), Decimal(0)) + shipping)
    return Received(
        after,
        refund,
        restock=summed((x.sku, x.quantity) for x in received if x.condition is Condition.RESELLABLE),
        write_off=summed((x.sku, x.quantity) for x in received if x.condition is Condition.DAMAGED),
        status="returned" if complete else "partially_returned",
    )


def prices_of(lines: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """Per sku, the unit price a refund pays: the lowest the order charged for it."""
    prices: dict[str, Decimal] = {}
    for sku, price in lines:
        prices[sku] = min(price, prices.get(sku, price))
    return prices
