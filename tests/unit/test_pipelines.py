"""Fulfillment pipelines: selection, forward-only moves, order progress, ETA, config checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from libs.cli.main import app
from services.fulfillment.app.use_cases import load_pipelines
from services.fulfillment.domain.pipelines import (
    MoveKind,
    Refusal,
    ShipmentState,
    advance,
    eta,
    order_progress,
    parse_config,
)

pytestmark = pytest.mark.unit

CONFIG = load_pipelines()
STANDARD = CONFIG.get("standard")


@pytest.mark.parametrize(
    ("method", "kind", "expected"),
    [
        ("express", "warehouse", "express"),
        ("standard", "dropship", "dropship"),
        ("standard", "store", "standard"),
        ("express", "dropship", "express"),
    ],
)
def test_the_first_matching_pipeline_takes_the_shipment(method: str, kind: str, expected: str) -> None:
    assert CONFIG.select(method, kind, "webshop").name == expected


def test_stages_move_forward_and_may_skip() -> None:
    move = advance(STANDARD, "new", "packed")
    assert not isinstance(move, Refusal) and move.kind is MoveKind.MOVED
    last = advance(STANDARD, "shipped", "delivered")
    assert not isinstance(last, Refusal) and last.kind is MoveKind.LEFT


@pytest.mark.parametrize(
    ("current", "target", "code"),
    [
        ("packed", "picking", "stage_backwards"),
        ("packed", "packed", "stage_backwards"),
        ("new", "teleported", "unknown_stage"),
        ("shipped", "failed", "already_shipped"),
    ],
)
def test_moves_that_are_refused_say_why(current: str, target: str, code: str) -> None:
    refusal = advance(STANDARD, current, target)
    assert isinstance(refusal, Refusal) and refusal.code == code


def test_a_shipment_that_left_the_pipeline_takes_no_more_updates() -> None:
    refusal = advance(STANDARD, "new", "picking", active=False)
    assert isinstance(refusal, Refusal) and refusal.code == "shipment_not_active"


def test_failing_before_shipping_takes_the_shipment_out() -> None:
    move = advance(STANDARD, "picking", "failed")
    assert not isinstance(move, Refusal) and move.kind is MoveKind.FAILED


def test_order_progress_follows_all_its_active_shipments() -> None:
    def s(stage: str, active: bool = True) -> ShipmentState:
        return ShipmentState(STANDARD, stage, active)

    assert order_progress([]) is None
    assert order_progress([s("new"), s("picking")]) == "in_fulfillment"
    assert order_progress([s("new"), s("shipped")]) == "partially_shipped"
    assert (
        order_progress([s("shipped"), s("packed", active=False)]) == "shipped"
    )  # a cancelled one does not count
    assert order_progress([s("delivered", active=False), s("shipped")]) == "shipped"
    assert order_progress([s("delivered", active=False), s("delivered", active=False)]) == "delivered"


def test_an_order_with_a_failed_parcel_not_yet_sourced_again_is_never_shipped() -> None:
    def s(stage: str, active: bool = True) -> ShipmentState:
        return ShipmentState(STANDARD, stage, active)

    shipped_and_failed = [s("shipped"), s("picking", active=False)]
    assert order_progress(shipped_and_failed) == "shipped"  # the failed one was cancelled, say
    assert order_progress(shipped_and_failed, awaiting_resource=True) == "partially_shipped"
    assert order_progress([s("delivered", active=False)], awaiting_resource=True) == "partially_shipped"
    assert order_progress([s("picking")], awaiting_resource=True) == "in_fulfillment"


def test_an_order_whose_parcels_on_their_way_were_all_lost_and_refunded_is_refunded() -> None:
    def s(stage: str, active: bool = True) -> ShipmentState:
        return ShipmentState(STANDARD, stage, active)

    assert order_progress([s("shipped", active=False)]) == "refunded"
    assert order_progress([s("shipped", active=False), s("picking", active=False)]) == "refunded"
    # Re-shipped (awaiting a replacement), or a sibling still on its way or delivered: not refunded.
    assert order_progress([s("shipped", active=False)], awaiting_resource=True) is None
    assert order_progress([s("shipped", active=False), s("packed")]) == "in_fulfillment"
    assert order_progress([s("shipped", active=False), s("delivered", active=False)]) == "delivered"
    assert order_progress([s("picking", active=False)]) is None  # failed or cancelled before shipping


def test_eta_adds_remaining_stage_hours_and_transit_days() -> None:
    start = datetime(2026, 11, 27, 12, tzinfo=UTC)
    assert eta(STANDARD, "shipped", start, None, 600) == start + timedelta(hours=24)
    assert eta(STANDARD, "shipped", start, 1200, 600) == start + timedelta(hours=24, days=2)


def test_a_config_that_could_strand_shipments_is_refused() -> None:
    stages = [{"name": "new"}, {"name": "done"}]
    with pytest.raises(ValueError, match="select everything"):
        parse_config(
            {
                "version": 1,
                "pipelines": [
                    {"name": "x", "select": {"channel": "pos"}, "ships_at": "done", "stages": stages}
                ],
            }
        )
    with pytest.raises(ValueError, match="ships_at"):
        parse_config({"version": 1, "pipelines": [{"name": "x", "ships_at": "gone", "stages": stages}]})


def test_baton_pipelines_lists_every_pipeline_with_its_stages() -> None:
    result = CliRunner().invoke(app, ["pipelines"])
    assert result.exit_code == 0
    for name in ("standard", "express", "dropship"):
        assert name in result.output
    assert "new(4h) -> picking(8h)" in result.output
