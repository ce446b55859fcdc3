"""Pending payments as pure rules: what each payment event and the deadline do to an order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.allocation.domain.payments import (
    Ignore,
    PaymentState,
    Proceed,
    Remember,
    Void,
    on_arrival,
    on_deadline,
    on_payment,
    reservation_deadline,
)
from services.notification.domain.emails import cancelled_because

pytestmark = pytest.mark.unit


def test_the_deadline_is_the_channels_minutes_after_the_reservation() -> None:
    now = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert reservation_deadline(now, 30) == now + timedelta(minutes=30)


@pytest.mark.parametrize("paid", [PaymentState.AUTHORIZED, PaymentState.CAPTURED])
def test_an_authorized_or_captured_payment_sends_a_waiting_order_on(paid: PaymentState) -> None:
    assert isinstance(on_payment(PaymentState.PENDING, True, paid), Proceed)


@pytest.mark.parametrize(
    ("incoming", "code"),
    [(PaymentState.FAILED, "payment_failed"), (PaymentState.REFUNDED, "payment_refunded")],
)
def test_a_failed_or_refunded_payment_cancels_a_waiting_order(incoming: PaymentState, code: str) -> None:
    decision = on_payment(PaymentState.PENDING, True, incoming)
    assert isinstance(decision, Void) and decision.code == code


def test_a_payment_event_before_allocation_saw_the_order_is_remembered() -> None:
    assert isinstance(on_payment(None, False, PaymentState.AUTHORIZED), Remember)
    assert on_arrival(PaymentState.AUTHORIZED, "pending") is PaymentState.AUTHORIZED
    assert on_arrival(PaymentState.FAILED, "pending") is PaymentState.FAILED


def test_an_order_no_longer_waiting_ignores_payment_events() -> None:
    for state in (None, PaymentState.AUTHORIZED, PaymentState.EXPIRED, PaymentState.FAILED):
        assert isinstance(on_payment(state, True, PaymentState.FAILED), Ignore)


def test_the_deadline_cancels_only_an_order_still_waiting_with_payment_timeout() -> None:
    decision = on_deadline(PaymentState.PENDING)
    assert isinstance(decision, Void) and decision.code == "payment_timeout"
    for state in (None, PaymentState.AUTHORIZED, PaymentState.CAPTURED, PaymentState.FAILED):
        assert isinstance(on_deadline(state), Ignore)


def test_only_a_pending_submission_is_tracked() -> None:
    assert on_arrival(None, "pending") is PaymentState.PENDING
    assert on_arrival(None, "authorized") is None


def test_the_cancellation_e_mail_says_when_the_payment_was_why() -> None:
    assert cancelled_because(["payment_timeout"]) == " because we did not receive your payment in time"
    assert cancelled_because(["out_of_stock", "payment_failed"]) == " because your payment did not go through"
    assert cancelled_because([]) == ""
