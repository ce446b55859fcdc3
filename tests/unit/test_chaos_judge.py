"""The chaos run's idea of a settled order, from what the public topics said about it: an order it
calls settled must be one nothing will move any more, and one still moving must not be called so."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos.harness import PART_WAITS_FOR_STOCK, Observed, _latest

pytestmark = pytest.mark.unit


def status(version: int, name: str, *codes: str) -> dict[str, Any]:
    return {
        "version": version,
        "status": name,
        "reasons": [{"code": c} for c in codes],
        "shipments": [],
        "event_id": f"e{version}",
    }


def stage(shipment: str, left: str | None, entered: str | None, change: str) -> dict[str, Any]:
    return {
        "shipment_id": shipment,
        "left_stage": left,
        "entered_stage": entered,
        "change": change,
        "pipeline": "standard",
    }


def observed(statuses: list[dict[str, Any]], stages: list[dict[str, Any]]) -> Observed:
    seen = Observed()
    seen.by_external["x"] = "o"
    seen.statuses["o"] = statuses
    seen.stage_changes["o"] = stages
    return seen


START = [status(1, "received"), status(2, "validated"), status(3, "allocated"), status(4, "in_fulfillment")]
BOTH_ENTERED = [stage("s1", None, "new", "entered"), stage("s2", None, "new", "entered")]


def test_a_failed_parcel_backordered_after_its_sibling_shipped_is_settled_once_the_sibling_arrived() -> None:
    statuses = [
        *START,
        status(5, "partially_shipped"),  # s1 shipped
        status(6, "partially_shipped", "awaiting_stock"),  # s2 failed
        status(7, "partially_shipped", "insufficient_stock"),  # allocation: no stock for s2's lines
    ]
    moving = [*BOTH_ENTERED, stage("s1", "new", "shipped", "moved"), stage("s2", "new", None, "left")]
    assert _latest(observed(statuses, moving), "x") == "partially_shipped"  # s1 is still on its way
    arrived = [*moving, stage("s1", "shipped", "delivered", "moved")]
    assert _latest(observed(statuses, arrived), "x") == PART_WAITS_FOR_STOCK


def test_a_failed_parcel_backordered_before_its_sibling_shipped_is_settled_once_nothing_moves() -> None:
    statuses = [
        *START,
        status(5, "backordered", "insufficient_stock"),
        status(6, "partially_shipped", "awaiting_stock"),
    ]
    stages = [
        *BOTH_ENTERED,
        stage("s2", "new", None, "left"),
        stage("s1", "new", "shipped", "moved"),
        stage("s1", "shipped", "delivered", "moved"),
    ]
    assert _latest(observed(statuses, stages), "x") == PART_WAITS_FOR_STOCK


def test_a_failed_parcel_sourced_again_is_not_settled_while_its_replacement_moves() -> None:
    statuses = [
        *START,
        status(5, "partially_shipped"),
        status(6, "partially_shipped", "awaiting_stock"),
        status(7, "partially_shipped"),  # re-sourced: a new shipment s3
    ]
    stages = [
        *BOTH_ENTERED,
        stage("s1", "new", "shipped", "moved"),
        stage("s2", "new", None, "left"),
        stage("s3", None, "new", "entered"),
        stage("s1", "shipped", "delivered", "moved"),
    ]
    assert _latest(observed(statuses, stages), "x") == "partially_shipped"
