"""Partial shipping (`ship_available`) as pure rules and in allocation: what is in stock ships now,
the rest is backordered and ships as its own shipment once all of it is in stock."""

from __future__ import annotations

from decimal import Decimal

import pytest

from libs.contracts.lifecycle import OrderAllocated, OrderBackordered, ShipmentShipped
from libs.policy.channels import parse_policies
from services.allocation.app.use_cases import adjust_stock, allocate_orders, rules_from, ship_shipment
from services.allocation.domain.allocations import AllocationStatus
from services.allocation.domain.sourcing import (
    Destination,
    Location,
    Partial,
    Request,
    Rules,
    Shortage,
    plan_in_turn,
)
from tests.unit.test_allocation_use_cases import RULES, arrival, validated, with_stock

pytestmark = pytest.mark.unit

WH = [Location("wh", "warehouse", frozenset({"DE"}), Decimal("5"))]
AVAILABLE = Rules(ship_available=frozenset({("marketplace", True)}))


def wanted(*lines: tuple[str, int], channel: str = "marketplace") -> Request:
    return Request(tuple(lines), Destination("DE"), channel=channel)


def test_ship_available_plans_what_is_in_stock_and_backorders_the_rest() -> None:
    [outcome] = plan_in_turn([wanted(("A", 2), ("B", 1))], WH, {("A", "wh"): 1}, AVAILABLE, partial=True)
    assert isinstance(outcome, Partial)
    assert [s.lines for s in outcome.plan.shipments] == [(("A", 1),)]
    assert outcome.waiting == (("A", 1), ("B", 1))
    assert [m.sku for m in outcome.missing] == ["A", "B"]


def test_ship_complete_channels_and_orders_with_nothing_in_stock_are_backordered_whole() -> None:
    stock = {("A", "wh"): 1}
    [complete] = plan_in_turn([wanted(("A", 2), channel="webshop")], WH, stock, AVAILABLE, partial=True)
    assert isinstance(complete, Shortage)
    [nothing] = plan_in_turn([wanted(("B", 1))], WH, stock, AVAILABLE, partial=True)
    assert isinstance(nothing, Shortage)


def test_a_partial_plan_takes_its_units_from_the_requests_after_it() -> None:
    first, second = plan_in_turn(
        [wanted(("A", 3)), wanted(("A", 1), channel="webshop")], WH, {("A", "wh"): 2}, AVAILABLE, partial=True
    )
    assert isinstance(first, Partial) and isinstance(second, Shortage)


def test_the_channel_policy_names_the_channels_that_ship_what_is_available() -> None:
    policies = parse_policies(
        {
            "version": 1,
            "defaults": {"supported_countries": ["DE"], "hold_threshold": "100"},
            "channels": {"marketplace": {"sourcing": {"policy": "ship_available"}}},
        },
        "test",
    )
    rules = rules_from(3, "0.01", policies)
    assert rules.ships_available("marketplace") and not rules.ships_available("webshop")


async def test_a_ship_available_order_ships_what_is_in_stock_and_the_rest_follows_as_its_own_shipment() -> (
    None
):
    rules = Rules(ship_available=frozenset({("marketplace", True)}))
    uow = await with_stock(("A", "wh", 1), ("B", "wh", 0))
    fact = validated(("A", 1), ("B", 2))
    fact = fact.model_copy(update={"order": fact.order.model_copy(update={"channel": "marketplace"})})
    [[now]] = await allocate_orders([fact], uow, rules)
    assert isinstance(now, OrderAllocated)
    assert [(line.sku, line.quantity) for s in now.shipments for line in s.lines] == [("A", 1)]
    assert [(line.sku, line.quantity) for line in now.backordered_lines] == [("B", 2)]
    assert uow.state.orders[fact.order_id].status is AllocationStatus.BACKORDERED
    [first] = now.shipments
    await ship_shipment(
        ShipmentShipped(
            order_id=fact.order_id, shipment_id=first.shipment_id, location_id="wh", lines=first.lines
        ),
        uow,
    )
    assert await adjust_stock(arrival("B", "wh", 1), uow, rules) == [], "the rest ships once all of it is in"
    [rest] = await adjust_stock(arrival("B", "wh", 1), uow, rules)
    assert isinstance(rest, OrderAllocated) and rest.backordered_lines == []
    assert sorted((line.sku, line.quantity) for s in rest.shipments for line in s.lines) == [
        ("A", 1),
        ("B", 2),
    ]
    assert len({s.shipment_id for s in rest.shipments}) == 2
    assert uow.state.orders[fact.order_id].status is AllocationStatus.ALLOCATED


async def test_a_ship_complete_order_still_waits_whole() -> None:
    uow = await with_stock(("A", "wh", 1))
    [[waiting]] = await allocate_orders([validated(("A", 1), ("B", 1))], uow, RULES)
    assert isinstance(waiting, OrderBackordered)
    assert uow.state.units("A", "wh").reserved == 0
