"""Intake's order identity and status state machine."""

from __future__ import annotations

import pytest

from services.intake.domain.orders import (
    Status,
    Submission,
    Transition,
    as_seen_by_customer,
    classify_submission,
    decide_transition,
    fingerprint,
    order_id_for,
)

pytestmark = pytest.mark.unit


def test_the_same_channel_order_always_gets_the_same_id_and_channels_do_not_collide() -> None:
    assert order_id_for("web", "1") == order_id_for("web", "1")
    assert order_id_for("web", "1") != order_id_for("pos", "1")


def test_fingerprint_ignores_key_order() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_a_retry_is_recognised_and_a_different_payload_is_a_conflict() -> None:
    assert classify_submission(None, "x") is Submission.NEW
    assert classify_submission("x", "x") is Submission.RETRY
    assert classify_submission("x", "y") is Submission.CONFLICT


@pytest.mark.parametrize(
    ("current", "proposed"),
    [
        ("received", "validated"),
        ("on_hold", "validated"),
        ("validated", "backordered"),
        ("backordered", "allocated"),
        ("allocated", "allocated"),
        ("in_fulfillment", "allocated"),
        ("shipped", "delivered"),
        ("in_fulfillment", "partially_shipped"),
        ("partially_shipped", "partially_shipped"),
        ("partially_shipped", "shipped"),
    ],
)
def test_forward_moves_are_applied(current: str, proposed: str) -> None:
    assert decide_transition(Status(current), Status(proposed)) is Transition.APPLY


@pytest.mark.parametrize(
    ("current", "proposed"),
    [
        ("validated", "received"),
        ("allocated", "validated"),
        ("rejected", "validated"),
        ("delivered", "shipped"),
        ("shipped", "allocated"),
        ("cancelled", "allocated"),
        ("received", "allocated"),
        ("partially_shipped", "cancelled"),
        ("shipped", "partially_shipped"),
    ],
)
def test_backward_or_impossible_moves_are_refused(current: str, proposed: str) -> None:
    assert decide_transition(Status(current), Status(proposed)) is Transition.REFUSE


@pytest.mark.parametrize("proposed", ["allocated", "backordered", "in_fulfillment"])
def test_once_part_has_shipped_sourcing_again_or_waiting_is_still_partially_shipped(proposed: str) -> None:
    assert as_seen_by_customer(Status.PARTIALLY_SHIPPED, Status(proposed)) is Status.PARTIALLY_SHIPPED
    assert as_seen_by_customer(Status.IN_FULFILLMENT, Status(proposed)) is Status(proposed)
    assert as_seen_by_customer(Status.PARTIALLY_SHIPPED, Status.SHIPPED) is Status.SHIPPED
