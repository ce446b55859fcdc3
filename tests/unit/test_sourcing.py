"""Sourcing rules: where each line ships from."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.allocation.domain.sourcing import (
    Destination,
    Location,
    Plan,
    PlannedShipment,
    Request,
    Rules,
    Shortage,
    plan_shipments,
)

pytestmark = pytest.mark.unit

DE = frozenset({"DE"})
BERLIN = Destination("DE", 52.52, 13.405)


def loc(
    location_id: str,
    cost: str = "5",
    kind: str = "warehouse",
    countries: frozenset[str] = DE,
    lat: float | None = None,
    lon: float | None = None,
    active: bool = True,
) -> Location:
    return Location(location_id, kind, countries, Decimal(cost), lat, lon, active)


def request(*lines: tuple[str, int], express: bool = False, dest: Destination = BERLIN) -> Request:
    return Request(tuple(lines), dest, express)


def test_one_location_that_ships_everything_beats_a_cheaper_split() -> None:
    locations = [loc("cheap-a", "1"), loc("cheap-b", "1"), loc("full", "9")]
    stock = {("A", "cheap-a"): 5, ("B", "cheap-b"): 5, ("A", "full"): 5, ("B", "full"): 5}
    plan = plan_shipments(request(("A", 1), ("B", 1)), locations, stock, Rules())
    assert isinstance(plan, Plan)
    assert plan.shipments == (PlannedShipment("full", (("A", 1), ("B", 1))),)


def test_split_across_the_fewest_locations_when_none_has_everything() -> None:
    locations = [loc("w1"), loc("w2"), loc("w3")]
    stock = {("A", "w1"): 3, ("B", "w2"): 3, ("A", "w3"): 1, ("B", "w3"): 1}
    plan = plan_shipments(request(("A", 2), ("B", 2)), locations, stock, Rules())
    assert isinstance(plan, Plan)
    assert [s.location_id for s in plan.shipments] == ["w1", "w2"]


def test_a_line_is_split_when_no_location_holds_its_quantity() -> None:
    stock = {("A", "w1"): 5, ("A", "w2"): 3}
    plan = plan_shipments(request(("A", 7)), [loc("w1"), loc("w2")], stock, Rules())
    assert isinstance(plan, Plan)
    assert plan.shipments == (PlannedShipment("w1", (("A", 5),)), PlannedShipment("w2", (("A", 2),)))


def test_no_plan_needs_more_than_max_shipments() -> None:
    locations = [loc("w1"), loc("w2"), loc("w3")]
    stock = {("A", "w1"): 1, ("A", "w2"): 1, ("A", "w3"): 1}
    assert isinstance(plan_shipments(request(("A", 3)), locations, stock, Rules(max_shipments=3)), Plan)
    shortage = plan_shipments(request(("A", 3)), locations, stock, Rules(max_shipments=2))
    assert isinstance(shortage, Shortage)
    assert [m.code for m in shortage.missing] == ["split_limit_exceeded"]


def test_only_active_locations_serving_the_destination_country_are_used() -> None:
    locations = [
        loc("fr", "1", countries=frozenset({"FR"})),
        loc("closed", "1", active=False),
        loc("de", "7"),
    ]
    stock = {("A", "fr"): 9, ("A", "closed"): 9, ("A", "de"): 9}
    plan = plan_shipments(request(("A", 1)), locations, stock, Rules())
    assert isinstance(plan, Plan) and [s.location_id for s in plan.shipments] == ["de"]


def test_express_orders_ship_only_from_warehouses() -> None:
    locations = [loc("store", "1", kind="store"), loc("drop", "1", kind="dropship"), loc("wh", "8")]
    stock = {("A", "store"): 9, ("A", "drop"): 9, ("A", "wh"): 9}
    express = plan_shipments(request(("A", 1), express=True), locations, stock, Rules())
    assert isinstance(express, Plan) and [s.location_id for s in express.shipments] == ["wh"]
    standard = plan_shipments(request(("A", 1)), locations, stock, Rules())
    assert isinstance(standard, Plan) and standard.shipments[0].location_id in {"store", "drop"}


def test_lower_cost_wins_among_equal_shipment_counts_including_distance() -> None:
    near = loc("potsdam", "5", lat=52.39, lon=13.06)  # ~27 km from Berlin
    far = loc("munich", "4", lat=48.14, lon=11.58)  # ~500 km from Berlin
    stock = {("A", "potsdam"): 1, ("A", "munich"): 1}
    plan = plan_shipments(request(("A", 1)), [far, near], stock, Rules(cost_per_km=Decimal("0.01")))
    assert isinstance(plan, Plan) and plan.shipments[0].location_id == "potsdam"
    flat = plan_shipments(request(("A", 1)), [far, near], stock, Rules(cost_per_km=Decimal("0")))
    assert isinstance(flat, Plan) and flat.shipments[0].location_id == "munich"


def test_equal_cost_ties_break_by_location_id_for_a_deterministic_plan() -> None:
    stock = {("A", "b"): 1, ("A", "a"): 1}
    plan = plan_shipments(request(("A", 1)), [loc("b"), loc("a")], stock, Rules())
    assert isinstance(plan, Plan) and plan.shipments[0].location_id == "a"


def test_short_stock_backorders_naming_each_missing_sku_and_never_plans_beyond_stock() -> None:
    stock = {("A", "w1"): 2, ("B", "w1"): 10}
    shortage = plan_shipments(request(("A", 3), ("B", 1), ("C", 1)), [loc("w1")], stock, Rules())
    assert isinstance(shortage, Shortage)
    assert [(m.code, m.sku) for m in shortage.missing] == [
        ("insufficient_stock", "A"),
        ("insufficient_stock", "C"),
    ]


def test_repeated_lines_of_one_sku_count_together() -> None:
    shortage = plan_shipments(request(("A", 2), ("A", 2)), [loc("w1")], {("A", "w1"): 3}, Rules())
    assert isinstance(shortage, Shortage)
