"""Intake's order identity and status state machine."""

from __future__ import annotations

from uuid import uuid4

import pytest

from libs.contracts.vocabulary import OrderStatus
from services.intake.domain.orders import (
    NEXT,
    Order,
    Submission,
    Transition,
    advance,
    as_seen_by_customer,
    cancel_refusal,
    classify_submission,
    classify_submissions,
    decide_transition,
    fingerprint,
    order_id_for,
    receive,
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
        ("backordered", "partially_shipped"),  # a parcel left while the rest waits for stock
        ("allocated", "partially_shipped"),  # the rest was sourced again before the news arrived
        ("in_fulfillment", "delivered"),  # an update that skips `shipped`
        ("partially_shipped", "partially_shipped"),
        ("partially_shipped", "shipped"),
        ("delivered", "partially_returned"),  # a return of part of it was received
        ("delivered", "returned"),
        ("partially_returned", "partially_returned"),  # another return, still not all of it
        ("partially_returned", "returned"),
    ],
)
def test_forward_moves_are_applied(current: str, proposed: str) -> None:
    assert decide_transition(OrderStatus(current), OrderStatus(proposed)) is Transition.APPLY


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
        ("shipped", "returned"),  # only a delivered order is returned
        ("returned", "partially_returned"),
        ("returned", "delivered"),
    ],
)
def test_backward_or_impossible_moves_are_refused(current: str, proposed: str) -> None:
    assert decide_transition(OrderStatus(current), OrderStatus(proposed)) is Transition.REFUSE


@pytest.mark.parametrize("proposed", ["allocated", "backordered", "in_fulfillment"])
def test_once_part_has_shipped_sourcing_again_or_waiting_is_still_partially_shipped(proposed: str) -> None:
    assert (
        as_seen_by_customer(OrderStatus.PARTIALLY_SHIPPED, OrderStatus(proposed))
        is OrderStatus.PARTIALLY_SHIPPED
    )
    assert as_seen_by_customer(OrderStatus.IN_FULFILLMENT, OrderStatus(proposed)) is OrderStatus(proposed)
    assert as_seen_by_customer(OrderStatus.PARTIALLY_SHIPPED, OrderStatus.SHIPPED) is OrderStatus.SHIPPED


def test_a_channel_order_twice_in_one_batch_is_judged_against_its_first_submission() -> None:
    a, b = order_id_for("web", "a"), order_id_for("web", "b")
    verdicts = classify_submissions([(a, "x"), (a, "x"), (a, "y"), (b, "z"), (b, "z")], {b: "y"})
    assert verdicts == [
        Submission.NEW,
        Submission.RETRY,
        Submission.CONFLICT,
        Submission.CONFLICT,
        Submission.CONFLICT,
    ]


def test_a_conflict_in_a_batch_never_replaces_what_is_on_file() -> None:
    a = order_id_for("web", "a")
    assert classify_submissions([(a, "y"), (a, "x")], {a: "x"}) == [Submission.CONFLICT, Submission.RETRY]


def test_every_status_has_its_moves() -> None:
    assert set(NEXT) == set(OrderStatus)


def test_a_new_order_is_received_as_version_1() -> None:
    new = receive("web", "1")
    assert (new.order_id, new.status, new.version) == (order_id_for("web", "1"), OrderStatus.RECEIVED, 1)


def test_an_allowed_move_is_the_next_version_and_a_refused_one_is_none() -> None:
    order = Order(uuid4(), "web", "1", OrderStatus.PARTIALLY_SHIPPED, 7)
    moved = advance(order, OrderStatus.ALLOCATED)
    assert moved is not None and (moved.status, moved.version) == (OrderStatus.PARTIALLY_SHIPPED, 8)
    assert advance(order, OrderStatus.CANCELLED) is None


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (OrderStatus.SHIPPED, "already_shipped"),
        (OrderStatus.DELIVERED, "already_shipped"),
        (OrderStatus.PARTIALLY_RETURNED, "already_shipped"),
        (OrderStatus.RETURNED, "already_shipped"),
        (OrderStatus.REJECTED, "already_final"),
        (OrderStatus.CANCELLED, "already_final"),
        (OrderStatus.PARTIALLY_SHIPPED, None),
        (OrderStatus.IN_FULFILLMENT, None),
        (OrderStatus.RECEIVED, None),
    ],
)
def test_only_what_is_clearly_too_late_is_refused_a_cancel(status: OrderStatus, code: str | None) -> None:
    refusal = cancel_refusal(status)
    assert (refusal.code if refusal else None) == code
