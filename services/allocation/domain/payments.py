"""Orders whose payment is pending: how long their stock stays reserved and what each payment event
does to them. Pure.

In words:
1. An order submitted with payment `pending` is sourced like any other, but its reservation waits
   for the payment: it is not sent to fulfillment, and it is released at a deadline (the channel's
   ``payment.reservation_minutes`` after allocation first saw the order).
2. `authorized` or `captured` before the deadline sends the order on (to fulfillment if its stock
   is reserved; a backordered one is allocated as usual when stock arrives).
3. `failed` or `refunded` while it waits cancels it (`payment_failed` / `payment_refunded`); the
   deadline passing first cancels it with `payment_timeout`. Either way its units are released
   and go to the oldest backorders waiting for them.
4. A payment event for an order allocation has not seen yet is remembered and applied when it
   arrives; one for an order no longer waiting changes nothing (refunds after shipping are returns).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

PAYMENT_DEADLINE = "payment_deadline"
"""The durable timer kind of a pending order's reservation deadline (key = order id)."""


class PaymentState(StrEnum):
    PENDING = "pending"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    FAILED = "failed"
    REFUNDED = "refunded"
    EXPIRED = "expired"


PAID = frozenset({PaymentState.AUTHORIZED, PaymentState.CAPTURED})
VOID = frozenset({PaymentState.FAILED, PaymentState.REFUNDED, PaymentState.EXPIRED})

CANCEL_REASONS: dict[PaymentState, tuple[str, str]] = {
    PaymentState.FAILED: ("payment_failed", "the payment failed"),
    PaymentState.REFUNDED: ("payment_refunded", "the payment was refunded before the order was sent"),
    PaymentState.EXPIRED: ("payment_timeout", "the payment was not authorized in time"),
}


def reservation_deadline(now: datetime, minutes: float) -> datetime:
    """When a pending order's reservation is released unless its payment is authorized."""
    return now + timedelta(minutes=minutes)


class Proceed:
    """Payment arrived in time: fulfil the order."""


@dataclass(frozen=True)
class Void:
    """The order is cancelled and its stock released, for this reason."""

    code: str
    message: str


class Remember:
    """Nothing to do now; keep the payment's state (the order may not have reached allocation)."""


class Ignore:
    """The order is no longer waiting for its payment: the event changes nothing."""


PaymentDecision = Proceed | Void | Remember | Ignore


def on_payment(waiting: PaymentState | None, known: bool, incoming: PaymentState) -> PaymentDecision:
    """What a payment event does to an order: ``waiting`` is its payment state as allocation keeps
    it (None: none kept), ``known`` whether allocation has seen the order."""
    if not known:
        return Remember()
    if waiting is not PaymentState.PENDING:
        return Ignore()
    if incoming in PAID:
        return Proceed()
    code, message = CANCEL_REASONS[incoming]
    return Void(code, message)


def on_deadline(waiting: PaymentState | None) -> PaymentDecision:
    """The reservation deadline passed: an order still waiting for its payment is cancelled."""
    if waiting is PaymentState.PENDING:
        code, message = CANCEL_REASONS[PaymentState.EXPIRED]
        return Void(code, message)
    return Ignore()


def on_arrival(remembered: PaymentState | None, submitted: str) -> PaymentState | None:
    """The payment state an order starts with when allocation first sees it: what the channel
    submitted, unless a payment event arrived first. None: it needs no payment tracking."""
    if remembered is not None:
        return remembered
    return PaymentState.PENDING if submitted == PaymentState.PENDING else None
