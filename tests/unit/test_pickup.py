"""Click-and-collect as pure rules and use cases: where a pickup order is sourced from, the pickup
pipeline and its `ready_for_pickup` status, and a parcel not collected in time giving its stock back."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal

import pytest

from libs.contracts.lifecycle import OrderCancelAccepted, ShipmentShipped
from libs.contracts.orders import OrderDetails, OrderSubmitted
from libs.policy.channels import parse_policies
from libs.simulators.world import demo_shop, random_order
from services.allocation.app.use_cases import request_for, rules_from
from services.allocation.domain.sourcing import (
    Destination,
    Location,
    Plan,
    Request,
    Rules,
    Shortage,
    plan_shipments,
)
from services.fulfillment.app.use_cases import PICKUP_EXPIRY, expire_pickup
from services.intake.app.use_cases import fingerprinted
from services.notification.domain.emails import EMAIL_STATUSES
from services.validation.domain import rules as validation
from tests.support.orders import order
from tests.unit.test_fulfillment_use_cases import (
    CONFIG,
    applied,
    in_fulfillment,
    move,
    progress,
    stages,
    update,
    with_locations,
)
from tests.unit.test_validation_rules import CTX, ORDER, codes

pytestmark = pytest.mark.unit

DE = frozenset({"DE"})


def loc(location_id: str, kind: str = "warehouse", cost: str = "5") -> Location:
    return Location(location_id, kind, DE, Decimal(cost))


def pickup(*lines: tuple[str, int], at: str = "store-1", channel: str = "webshop") -> Request:
    return Request(tuple(lines), Destination("DE"), pickup_at=at, channel=channel)


LOCATIONS = [loc("store-1", "store", "9"), loc("store-2", "store", "1"), loc("wh", "warehouse", "1")]


def test_a_pickup_order_is_sourced_only_from_its_store() -> None:
    stock = {("A", "store-1"): 1, ("A", "store-2"): 5, ("A", "wh"): 5}
    plan = plan_shipments(pickup(("A", 1)), LOCATIONS, stock, Rules())
    assert isinstance(plan, Plan) and [s.location_id for s in plan.shipments] == ["store-1"]
    short = plan_shipments(pickup(("A", 2)), LOCATIONS, stock, Rules())
    assert isinstance(short, Shortage), "other stores and warehouses do not count without a transfer policy"


def test_a_channel_that_allows_transfers_may_source_a_pickup_from_a_warehouse_never_another_store() -> None:
    stock = {("A", "store-2"): 5, ("A", "wh"): 5}
    rules = Rules(pickup_transfer=frozenset({("webshop", True)}))
    plan = plan_shipments(pickup(("A", 2)), LOCATIONS, stock, rules)
    assert isinstance(plan, Plan) and [s.location_id for s in plan.shipments] == ["wh"]
    assert isinstance(plan_shipments(pickup(("A", 2), channel="pos"), LOCATIONS, stock, rules), Shortage)


def test_the_channel_policy_says_which_channels_transfer_and_the_order_names_its_store() -> None:
    policies = parse_policies(
        {
            "version": 1,
            "defaults": {"supported_countries": ["DE"], "hold_threshold": "100"},
            "channels": {"webshop": {"pickup": {"allowed": True, "transfer_from_warehouse": True}}},
        },
        "test",
    )
    rules = rules_from(3, "0.01", policies)
    assert rules.transfers_pickup("webshop") and not rules.transfers_pickup("pos")
    details = OrderDetails.model_validate(order(method="pickup") | {"pickup_location_id": "store-7"})
    assert request_for(details).pickup_at == "store-7"
    assert request_for(OrderDetails.model_validate(order())).pickup_at is None


def test_pickup_needs_a_channel_that_offers_it_and_a_named_store() -> None:
    wanted = replace(ORDER, shipping_method="pickup", pickup_location_id="store-1")
    assert codes(validation.pickup_not_possible(wanted, CTX)) == ["pickup_not_offered"]
    offered = replace(CTX, policy=replace(CTX.policy, pickup_allowed=True))
    assert validation.pickup_not_possible(wanted, offered) == []
    nowhere = replace(wanted, pickup_location_id=None)
    assert codes(validation.pickup_not_possible(nowhere, offered)) == ["pickup_location_missing"]
    assert validation.pickup_not_possible(ORDER, CTX) == []


def test_an_order_fingerprinted_before_pickup_existed_keeps_its_fingerprint() -> None:
    details = OrderDetails.model_validate(order("ext-fp"))
    assert "pickup_location_id" not in fingerprinted(details)
    collected = OrderDetails.model_validate(order("ext-fp2", method="pickup") | {"pickup_location_id": "s"})
    assert fingerprinted(collected)["pickup_location_id"] == "s"


def test_the_customer_hears_when_the_order_is_ready_for_pickup() -> None:
    assert "ready_for_pickup" in EMAIL_STATUSES


async def test_a_pickup_order_runs_the_pickup_pipeline_to_collected_as_delivered() -> None:
    uow = await with_locations(("store-1", "store", None))
    await in_fulfillment(uow, ("s1", "store-1", {"A": 1}), method="pickup")
    assert uow.known_shipments["s1"].pipeline == "pickup"
    [picking] = applied(await move(uow, update("s1", "picking")))
    assert stages(picking) == [("s1", "new", "picking", "moved", None)]
    [ready] = applied(await move(uow, update("s1", "ready_for_pickup")))
    assert progress(ready).status == "ready_for_pickup"
    assert (PICKUP_EXPIRY, "s1") in uow.timers.scheduled
    [collected] = applied(await move(uow, update("s1", "collected")))
    assert progress(collected).status == "delivered"
    assert any(isinstance(e, ShipmentShipped) for e in collected), (
        "collected is when the units leave the stock"
    )
    timer = uow.timers.scheduled[(PICKUP_EXPIRY, "s1")]
    assert await expire_pickup(timer, uow, CONFIG) == [], "collected: the expiry changes nothing"


async def test_a_parcel_not_collected_in_time_leaves_its_pipeline_and_gives_its_units_back() -> None:
    uow = await with_locations(("store-1", "store", None))
    fact = await in_fulfillment(uow, ("s1", "store-1", {"A": 2}), method="pickup")
    await move(uow, update("s1", "ready_for_pickup"))
    timer = uow.timers.scheduled[(PICKUP_EXPIRY, "s1")]
    events = await expire_pickup(timer, uow, CONFIG)
    assert stages(events) == [("s1", "ready_for_pickup", None, "left", "not_collected")]
    [accepted] = [e for e in events if isinstance(e, OrderCancelAccepted)]
    assert (accepted.order_id, accepted.request_id, accepted.reason, accepted.whole) == (
        fact.order_id,
        "",
        "not_collected",
        True,
    )
    assert [(line.sku, line.quantity) for s in accepted.release for line in s.lines] == [("A", 2)]
    assert not uow.known_shipments["s1"].active
    assert await expire_pickup(timer, uow, CONFIG) == [], "a second firing finds nothing waiting"


def test_the_demo_channel_sends_valid_pickup_orders_at_its_store() -> None:
    shop = demo_shop()
    placed = OrderSubmitted.model_validate(random_order(random.Random(1), shop, "demo-1", pickup_share=1.0))
    assert placed.shipping_method == "pickup" and placed.pickup_location_id == "store-paris"
    unchanged = random_order(random.Random(1), shop, "demo-1")
    assert unchanged["shipping_method"] != "pickup" and "pickup_location_id" not in unchanged
