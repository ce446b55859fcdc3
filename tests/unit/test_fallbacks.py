"""Fallback tiers as pure rules and in allocation: a long backorder widens its search."""

from __future__ import annotations

import pytest

from libs.contracts.lifecycle import OrderAllocated, OrderBackordered, ShipmentFailed
from libs.policy.channels import parse_policies
from services.allocation.app.use_cases import (
    SOURCING_FALLBACK,
    adjust_stock,
    allocate_orders,
    fail_shipment,
    fall_back,
    rules_from,
)
from services.allocation.domain.allocations import AllocationStatus
from services.allocation.domain.sourcing import Destination, Request, Rules, Tier, method_after, widen
from tests.unit.test_allocation_use_cases import arrival, location, validated, with_stock

pytestmark = pytest.mark.unit

EXPRESS = Request((("A", 1),), Destination("DE"), express=True)
TO_STANDARD = Tier(24, method="standard")
STORES = Tier(48, stores=True)


def test_a_tier_naming_another_method_or_letting_stores_in_lifts_expresss_warehouses_only_rule() -> None:
    assert widen(EXPRESS, ()).express
    assert not widen(EXPRESS, (TO_STANDARD,)).express
    assert not widen(EXPRESS, (STORES,)).express
    assert widen(EXPRESS, (Tier(1, method="express"),)).express


def test_the_order_ships_by_the_method_of_the_last_tier_that_names_one() -> None:
    assert method_after("express", ()) == "express"
    assert method_after("express", (TO_STANDARD, STORES)) == "standard"


def test_the_channel_policy_gives_each_channel_its_tiers() -> None:
    policies = parse_policies(
        {
            "version": 1,
            "defaults": {"supported_countries": ["DE"], "hold_threshold": "100"},
            "channels": {
                "webshop": {
                    "sourcing": {
                        "fallbacks": [
                            {"after_hours": 24, "shipping_method": "standard"},
                            {"after_hours": 48, "include_stores": True},
                        ]
                    }
                }
            },
        },
        "test",
    )
    rules = rules_from(3, "0.01", policies)
    assert rules.tiers("webshop") == (Tier(24, "standard", False), Tier(48, None, True))
    assert rules.tiers("pos") == ()


RULES = Rules(fallbacks=frozenset({("webshop", (Tier(1, method="standard"), Tier(2, stores=True)))}))


async def test_an_express_backorder_falls_back_to_a_standard_shipment_from_a_store_at_its_tier() -> None:
    uow = await with_stock(("A", "store-1", 1), locations=[location("store-1", kind="store")])
    fact = validated(("A", 1), method="express")
    [[backordered]] = await allocate_orders([fact], uow, RULES)
    assert isinstance(backordered, OrderBackordered)
    timer = uow.state.timers.scheduled.pop((SOURCING_FALLBACK, str(fact.order_id)))
    assert timer.payload == {"tier": 0}

    [allocated] = await fall_back(timer, uow, RULES)

    assert isinstance(allocated, OrderAllocated)
    assert allocated.order.shipping_method == "standard"
    assert [s.location_id for s in allocated.shipments] == ["store-1"]
    assert uow.state.orders[fact.order_id].status is AllocationStatus.ALLOCATED
    assert uow.state.timers.scheduled[(SOURCING_FALLBACK, str(fact.order_id))].payload == {"tier": 1}
    assert (
        await fall_back(uow.state.timers.scheduled.pop((SOURCING_FALLBACK, str(fact.order_id))), uow, RULES)
        == []
    )


async def test_a_backorder_past_its_tier_is_woken_by_stock_its_original_method_would_not_take() -> None:
    uow = await with_stock(("A", "store-1", 0), locations=[location("store-1", kind="store")])
    fact = validated(("A", 1), method="express")
    await allocate_orders([fact], uow, RULES)
    timer = uow.state.timers.scheduled.pop((SOURCING_FALLBACK, str(fact.order_id)))
    assert await fall_back(timer, uow, RULES) == [], "nothing in stock yet: it keeps waiting, widened"
    [woken] = await adjust_stock(arrival("A", "store-1", 1), uow, RULES)
    assert isinstance(woken, OrderAllocated) and woken.order.shipping_method == "standard"


async def test_a_channel_without_tiers_schedules_nothing() -> None:
    uow = await with_stock(("A", "wh", 0))
    await allocate_orders([validated(("A", 1))], uow, Rules())
    assert uow.state.timers.scheduled == {}


async def test_a_failed_parcel_that_cannot_be_sourced_again_starts_the_tiers() -> None:
    uow = await with_stock(("A", "wh", 1))
    fact = validated(("A", 1))
    [[allocated]] = await allocate_orders([fact], uow, RULES)
    assert isinstance(allocated, OrderAllocated) and uow.state.timers.scheduled == {}
    [shipment] = allocated.shipments
    failed = ShipmentFailed(
        order_id=fact.order_id,
        shipment_id=shipment.shipment_id,
        location_id="wh",
        lines=shipment.lines,
        reason="damaged",
    )
    [backordered] = await fail_shipment(failed, uow, RULES)
    assert isinstance(backordered, OrderBackordered)
    assert uow.state.timers.scheduled[(SOURCING_FALLBACK, str(fact.order_id))].payload == {"tier": 0}
