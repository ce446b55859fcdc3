"""Allocation's pure rules: planning in turn, what an order has now, what a cancellation may take."""

from __future__ import annotations

from decimal import Decimal
from uuid import uuid4

import pytest

from services.allocation.domain.allocations import (
    AllocationStatus,
    CancelAtOnce,
    CancelWaitingLines,
    Forward,
    GiveBack,
    Refuse,
    ReservationStatus,
    ReservedLine,
    Shipment,
    after_failed_parcel,
    cancelled_after_release,
    current_shipments,
    decide_cancel,
    give_back_lines,
    reservations_for,
    shipment_id,
    without,
)
from services.allocation.domain.sourcing import (
    Destination,
    Location,
    Plan,
    PlannedShipment,
    Request,
    Rules,
    Shortage,
    plan_in_turn,
)
from services.allocation.domain.stock import BelowReserved, StockLevel, adjust

pytestmark = pytest.mark.unit

BACKORDERED, ALLOCATED = AllocationStatus.BACKORDERED, AllocationStatus.ALLOCATED
WH = Location("wh", "warehouse", frozenset({"DE"}), Decimal("5"))


def request(*lines: tuple[str, int]) -> Request:
    return Request(tuple(lines), Destination("DE"))


def test_each_request_in_turn_sees_only_what_the_ones_before_it_left() -> None:
    first, second, third = plan_in_turn(
        [request(("A", 2)), request(("A", 2)), request(("A", 1))], [WH], {("A", "wh"): 3}, Rules()
    )
    assert isinstance(first, Plan) and first.shipments == (PlannedShipment("wh", (("A", 2),)),)
    assert isinstance(second, Shortage)
    assert isinstance(third, Plan)


def test_shipment_ids_are_stable_per_order_generation_and_location() -> None:
    order_id = uuid4()
    assert shipment_id(order_id, 1, "wh") == shipment_id(order_id, 1, "wh")
    assert (
        len({shipment_id(order_id, 1, "wh"), shipment_id(order_id, 2, "wh"), shipment_id(order_id, 1, "st")})
        == 3
    )
    plan = Plan((PlannedShipment("wh", (("A", 1), ("B", 2))),), Decimal(5))
    assert [(r.shipment_id, r.sku, r.quantity) for r in reservations_for(order_id, 1, plan)] == [
        (shipment_id(order_id, 1, "wh"), "A", 1),
        (shipment_id(order_id, 1, "wh"), "B", 2),
    ]


def test_an_order_has_now_what_is_reserved_or_shipped_but_not_what_failed_or_was_released() -> None:
    lines = [
        ReservedLine("s2", "wh2", "B", 1, ReservationStatus.RESERVED),
        ReservedLine("s1", "wh1", "A", 1, ReservationStatus.SHIPPED),
        ReservedLine("s1", "wh1", "C", 1, ReservationStatus.RELEASED),
        ReservedLine("s3", "wh3", "B", 1, ReservationStatus.FAILED),
    ]
    assert current_shipments(lines) == [
        Shipment("s1", "wh1", (("A", 1),)),
        Shipment("s2", "wh2", (("B", 1),)),
    ]


def test_cancelled_lines_come_out_of_a_waiting_remainder_only_when_it_has_them_all() -> None:
    assert without((("A", 2), ("B", 1)), (("A", 1), ("A", 1))) == (("B", 1),)
    assert without((("A", 2),), (("A", 1), ("A", 2))) is None
    assert without((("A", 2),), (("B", 1),)) is None


@pytest.mark.parametrize(
    ("status", "pending", "holds", "lines", "decision"),
    [
        (
            AllocationStatus.CANCELLED,
            None,
            False,
            None,
            Refuse("already_cancelled", "the order is already cancelled"),
        ),
        (None, None, False, None, CancelAtOnce()),
        (BACKORDERED, None, False, None, CancelAtOnce()),
        (BACKORDERED, None, False, (("A", 1),), "partial_cancel_before_allocation"),
        (ALLOCATED, None, True, None, Forward()),
        (ALLOCATED, None, True, (("A", 1),), Forward()),
        (BACKORDERED, (("B", 2),), True, (("B", 1),), CancelWaitingLines((("B", 1),))),
        (BACKORDERED, (("B", 2),), True, (("B", 2),), CancelWaitingLines(())),
        (BACKORDERED, (("B", 2),), True, (("A", 1), ("B", 1)), Forward()),
        (BACKORDERED, (("B", 2),), True, None, Forward()),
    ],
)
def test_a_cancel_request_is_decided_by_what_the_order_holds_and_what_waits(
    status: AllocationStatus | None,
    pending: tuple[tuple[str, int], ...] | None,
    holds: bool,
    lines: tuple[tuple[str, int], ...] | None,
    decision: object,
) -> None:
    decided = decide_cancel(status, pending, holds, lines)
    if isinstance(decision, str):
        assert isinstance(decided, Refuse) and decided.code == decision
    else:
        assert decided == decision


def test_an_order_is_cancelled_after_a_release_only_if_asked_whole_or_nothing_is_left() -> None:
    assert cancelled_after_release(True, True, ALLOCATED, None)
    assert cancelled_after_release(False, False, ALLOCATED, None)
    assert not cancelled_after_release(False, True, ALLOCATED, None)
    assert not cancelled_after_release(False, False, BACKORDERED, (("B", 1),))


def test_a_failed_parcel_joins_the_remainder_unless_it_is_sourced_again() -> None:
    assert after_failed_parcel(ALLOCATED, None, (("A", 1),), sourced_again=True) == (ALLOCATED, None)
    assert after_failed_parcel(ALLOCATED, None, (("A", 1),), sourced_again=False) == (
        BACKORDERED,
        (("A", 1),),
    )
    assert after_failed_parcel(BACKORDERED, (("B", 1),), (("A", 1),), sourced_again=True) == (
        BACKORDERED,
        (("B", 1),),
    )
    assert after_failed_parcel(BACKORDERED, (("A", 1),), (("A", 2),), sourced_again=False) == (
        BACKORDERED,
        (("A", 3),),
    )


def test_an_adjustment_never_leaves_fewer_units_on_hand_than_are_reserved() -> None:
    level = StockLevel("A", "wh", on_hand=5, reserved=3)
    received = adjust(level, "a1", delta=2, count=None, reason="received")
    assert not isinstance(received, BelowReserved) and (received.delta, received.on_hand_after) == (2, 7)
    counted = adjust(level, "a2", delta=None, count=3, reason="count")
    assert not isinstance(counted, BelowReserved) and (counted.delta, counted.on_hand_after) == (-2, 3)
    assert isinstance(adjust(level, "a3", delta=-3, count=None, reason="lost"), BelowReserved)


def test_lines_cancelled_while_the_payment_is_pending_come_from_what_waits_first_then_parcels_in_id_order() -> (
    None
):
    r = ReservationStatus
    held = [
        ReservedLine("s1", "wh1", "A", 2, r.RESERVED),
        ReservedLine("s2", "wh2", "A", 1, r.RESERVED),
        ReservedLine("s2", "wh2", "B", 1, r.RESERVED),
        ReservedLine("s0", "wh0", "A", 5, r.RELEASED),
    ]
    assert give_back_lines(held, (("A", 1),), (("A", 4),)) == GiveBack((("s1", "A", 2), ("s2", "A", 1)), ())
    assert give_back_lines(held, (), (("B", 1), ("A", 1))) == GiveBack((("s2", "B", 1), ("s1", "A", 1)), ())
    assert give_back_lines(held, (("A", 2),), (("A", 1),)) == GiveBack((), (("A", 1),))
    assert give_back_lines(held, (), (("A", 4),)) == Refuse("invalid_cancel_lines", "A: 4 not on the order")
    assert isinstance(give_back_lines(held, (), (("C", 1),)), Refuse)
