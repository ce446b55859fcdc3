"""Fulfillment's shipment rules, pure: the ship point and cancel plans, on values built in the test."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from services.fulfillment.app.config import load_pipelines
from services.fulfillment.domain.pipelines import Refusal
from services.fulfillment.domain.shipments import CancelPlan, Shipment, plan_cancel

pytestmark = pytest.mark.unit

CONFIG = load_pipelines()
STANDARD = CONFIG.get("standard")
ORDER = uuid4()


def shipment(sid: str, stage: str = "new", active: bool = True, **lines: int) -> Shipment:
    return Shipment(
        sid, ORDER, f"loc-{sid}", "standard", stage, active, lines, datetime(2026, 11, 27, tzinfo=UTC)
    )


def accepted(plan: CancelPlan | Refusal) -> CancelPlan:
    assert isinstance(plan, CancelPlan), plan
    return plan


def test_a_parcel_has_shipped_from_the_ship_point_on_and_the_move_reaching_it_ships_it() -> None:
    assert [STANDARD.has_shipped(s.name) for s in STANDARD.stages] == [False, False, False, True, True]
    assert STANDARD.ships_between("packed", "shipped")
    assert STANDARD.ships_between("new", "delivered")
    assert not STANDARD.ships_between("shipped", "delivered")
    assert not STANDARD.ships_between("new", "packed")


def test_cancelled_lines_are_taken_from_unshipped_shipments_in_shipment_id_order() -> None:
    plan = accepted(plan_cancel([shipment("b", A=2), shipment("a", A=2)], [("A", 3)], CONFIG))
    assert [(p.shipment_id, p.location_id, dict(p.lines)) for p in plan.release] == [
        ("a", "loc-a", {"A": 2}),
        ("b", "loc-b", {"A": 1}),
    ]
    assert [(s.shipment_id, s.active, dict(s.lines)) for s in plan.changed] == [
        ("a", False, {}),
        ("b", True, {"A": 1}),
    ]
    assert [s.shipment_id for s in plan.left] == ["a"]
    assert not plan.whole


def test_a_sku_named_twice_in_one_cancel_is_taken_twice() -> None:
    plan = accepted(plan_cancel([shipment("a", A=3)], [("A", 1), ("A", 2)], CONFIG))
    assert [dict(p.lines) for p in plan.release] == [{"A": 3}]
    assert plan.whole  # a cancel of lines that empties every shipment cancels the order


def test_a_delivered_parcel_counts_as_shipped_and_a_failed_or_cancelled_one_does_not() -> None:
    delivered = shipment("a", "delivered", active=False, A=1)
    failed = shipment("b", "picking", active=False, B=1)
    refused = plan_cancel([delivered, shipment("c", C=1)], None, CONFIG)
    assert isinstance(refused, Refusal) and refused.code == "already_shipped"
    plan = accepted(plan_cancel([failed, shipment("c", C=1)], None, CONFIG))
    assert ([p.shipment_id for p in plan.release], plan.whole) == (["c"], True)


def test_lines_beyond_what_is_left_unshipped_are_refused_with_the_reason_that_applies() -> None:
    shipped = shipment("a", "shipped", A=1)
    partly = plan_cancel([shipped, shipment("b", A=1)], [("A", 2)], CONFIG)
    assert isinstance(partly, Refusal) and partly.code == "already_shipped"
    never = plan_cancel([shipped, shipment("b", A=1)], [("Z", 1)], CONFIG)
    assert isinstance(never, Refusal) and never.code == "invalid_cancel_lines"
