"""Fulfillment's use cases on in-memory ports: what each input causes, without Kafka or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest

from libs.contracts.envelope import Event
from libs.contracts.fulfillment import FulfillmentUpdate, StageChanged
from libs.contracts.inventory import LocationUpdated
from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderCancelAccepted,
    OrderCancelForwarded,
    OrderCancelRefused,
    OrderEditAccepted,
    OrderEditForwarded,
    OrderEditRefused,
    OrderFulfillmentProgressed,
    ShipmentFailed,
    ShipmentShipped,
)
from libs.contracts.orders import OrderDetails, Shipment, ShipmentLine
from libs.contracts.returns import ReceivedLine, ReturnLine, ReturnReceived, ReturnRequested
from libs.contracts.topology import SERVICE_TOPOLOGY
from libs.contracts.vocabulary import LocationKind, ReturnCondition
from libs.platform.kafka import KafkaSecurity
from libs.platform.messaging import Rejected
from libs.policy.channels import Returns
from services.fulfillment.app.returns import receive_return, request_return
from services.fulfillment.app.use_cases import (
    apply_updates,
    decide_cancel,
    decide_edit,
    load_pipelines,
    receive_allocations,
    stage_late,
    update_location,
)
from services.fulfillment.domain.sla import STAGE_SLA
from services.fulfillment.entry import build_router
from services.fulfillment.settings import FulfillmentSettings
from tests.support.orders import order, stage_update
from tests.unit.fakes.fulfillment import FakeFulfillmentUnit

pytestmark = pytest.mark.unit

E = TypeVar("E", bound=Event)
CONFIG = load_pipelines()
BERLIN = (52.52, 13.405)
MUNICH = (48.14, 11.58)  # about 500 km from Berlin: one day in transit at 600 km a day


def allocated(
    *shipments: tuple[str, str, dict[str, int]],
    order_id: UUID | None = None,
    method: str = "standard",
    channel: str = "webshop",
    backordered: dict[str, int] | None = None,
) -> OrderAllocated:
    """An allocation of (shipment id, location id, {sku: units}) shipments."""
    details = OrderDetails.model_validate(order(method=method, channel=channel))
    return OrderAllocated(
        order_id=order_id or uuid4(),
        order=details,
        shipments=[
            Shipment(shipment_id=sid, location_id=loc, lines=lines_of(lines)) for sid, loc, lines in shipments
        ],
        backordered_lines=lines_of(backordered or {}),
    )


def lines_of(lines: dict[str, int]) -> list[ShipmentLine]:
    return [ShipmentLine(sku=sku, quantity=q) for sku, q in lines.items()]


def update(shipment_id: str, stage: str, **kwargs: Any) -> FulfillmentUpdate:
    return FulfillmentUpdate.model_validate(stage_update(shipment_id, stage, **kwargs))


def cancel(order_id: UUID, lines: dict[str, int] | None = None) -> OrderCancelForwarded:
    return OrderCancelForwarded(
        order_id=order_id,
        request_id=f"cx-{uuid4().hex[:6]}",
        lines=None if lines is None else lines_of(lines),
        reason="customer asked",
    )


def edit(fact: OrderAllocated) -> OrderEditForwarded:
    """The order with its first line's quantity doubled."""
    lines = [line.model_copy(update={"quantity": line.quantity * 2}) for line in fact.order.lines]
    return OrderEditForwarded(
        order_id=fact.order_id,
        request_id=f"ed-{uuid4().hex[:6]}",
        order=fact.order.model_copy(update={"lines": lines}),
    )


async def with_locations(*locations: tuple[str, str, tuple[float, float] | None]) -> FakeFulfillmentUnit:
    uow = FakeFulfillmentUnit()
    for location_id, kind, position in locations:
        lat, lon = position or (None, None)
        message = LocationUpdated(
            location_id=location_id,
            name=location_id,
            kind=LocationKind(kind),
            lat=lat,
            lon=lon,
            countries=["DE"],
            cost_per_shipment=Decimal("5.00"),
        )
        assert await update_location(message, uow) == []
    return uow


def applied(results: Sequence[Sequence[Event] | Rejected]) -> list[Sequence[Event]]:
    """The events of each item, asserting that none was rejected."""
    assert not any(isinstance(r, Rejected) for r in results), results
    return [r for r in results if not isinstance(r, Rejected)]


def of_type(events: Sequence[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def stages(events: Sequence[Event]) -> list[tuple[str, str | None, str | None, str, str | None]]:
    return [
        (e.shipment_id, e.left_stage, e.entered_stage, e.change, e.reason)
        for e in of_type(events, StageChanged)
    ]


def progress(events: Sequence[Event]) -> OrderFulfillmentProgressed:
    [fact] = of_type(events, OrderFulfillmentProgressed)
    return fact


async def in_fulfillment(
    uow: FakeFulfillmentUnit, *shipments: tuple[str, str, dict[str, int]], **kwargs: Any
) -> OrderAllocated:
    fact = allocated(*shipments, **kwargs)
    applied(await receive_allocations([fact], uow, CONFIG))
    return fact


async def move(uow: FakeFulfillmentUnit, *updates: FulfillmentUpdate) -> list[Sequence[Event] | Rejected]:
    return list(await apply_updates(list(updates), uow, CONFIG))


# Allocations


async def test_each_shipment_enters_the_first_stage_of_the_pipeline_its_method_and_location_select() -> None:
    uow = await with_locations(("wh", "warehouse", None), ("drop", "dropship", None), ("shop", "store", None))
    express = allocated(("s-express", "wh", {"MUG": 1}), method="express")
    dropship = allocated(("s-drop", "drop", {"MUG": 1}))
    standard = allocated(("s-store", "shop", {"MUG": 1}))
    unknown = allocated(("s-nowhere", "nowhere", {"MUG": 1}))
    results = applied(await receive_allocations([express, dropship, standard, unknown], uow, CONFIG))
    assert [stages(events) for events in results] == [
        [(sid, None, "new", "entered", None)] for sid in ("s-express", "s-drop", "s-store", "s-nowhere")
    ]
    assert {sid: s.pipeline for sid, s in uow.known_shipments.items()} == {
        "s-express": "express",
        "s-drop": "dropship",
        "s-store": "standard",
        "s-nowhere": "standard",  # a location fulfillment never heard of counts as a warehouse
    }


async def test_an_allocated_order_is_in_fulfillment_with_its_shipments_and_an_eta() -> None:
    uow = await with_locations(("wh", "warehouse", MUNICH))
    fact = allocated(("s1", "wh", {"MUG": 2}))
    [events] = applied(await receive_allocations([fact], uow, CONFIG))
    announced = progress(events)
    assert announced.status == "in_fulfillment"
    assert [(s.shipment_id, s.pipeline, s.stage, s.lines) for s in announced.shipments] == [
        ("s1", "standard", "new", [ShipmentLine(sku="MUG", quantity=2)])
    ]
    entered_at = uow.known_shipments["s1"].stage_entered_at
    assert announced.eta == entered_at + timedelta(hours=4 + 8 + 4 + 24, days=1)
    assert uow.known_orders[fact.order_id].progress == "in_fulfillment"


async def test_fulfillment_keeps_where_an_order_goes_only_to_a_tenth_of_a_degree() -> None:
    """About 11 km: transit days come out the same, a home cannot be found from it."""
    uow = await with_locations(("wh", "warehouse", MUNICH))
    fact = allocated(("s1", "wh", {"MUG": 1}))
    exact = fact.order.shipping_address

    await receive_allocations([fact], uow, CONFIG)

    kept = uow.known_orders[fact.order_id]
    assert exact.lat is not None and exact.lon is not None
    assert (kept.lat, kept.lon) == (round(exact.lat, 1), round(exact.lon, 1))
    assert (kept.lat, kept.lon) != (exact.lat, exact.lon)


async def test_a_batch_of_allocations_locks_reads_and_writes_each_kind_of_row_once() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    uow.calls.clear()
    batch = [allocated((f"s{i}", "wh", {"MUG": 1}), (f"t{i}", "wh", {"CUP": 1})) for i in range(20)]
    results = applied(await receive_allocations(batch, uow, CONFIG))
    assert len(results) == 20 and len(uow.known_shipments) == 40
    assert uow.calls == ["orders.lock", "locations.of", "orders.save", "terms.keep", "shipments.add"]


async def test_a_reduced_allocation_gives_a_known_shipment_its_new_lines_and_announces_progress_afresh() -> (
    None
):
    uow = await with_locations(("wh", "warehouse", None))
    first = await in_fulfillment(uow, ("s1", "wh", {"A": 3, "B": 1}))
    again = allocated(("s1", "wh", {"A": 1}), order_id=first.order_id)
    [events] = applied(await receive_allocations([again], uow, CONFIG))
    assert stages(events) == []
    assert progress(events).status == "in_fulfillment"
    assert uow.known_shipments["s1"].lines == {"A": 1}


async def test_an_orders_second_allocation_in_the_same_batch_sees_the_first() -> None:
    uow = await with_locations(("wh", "warehouse", None), ("wh2", "warehouse", None))
    first = allocated(("s1", "wh", {"A": 2}))
    second = allocated(("s1", "wh", {"A": 1}), ("s2", "wh2", {"B": 1}), order_id=first.order_id)
    one, two = applied(await receive_allocations([first, second], uow, CONFIG))
    assert stages(one) == [("s1", None, "new", "entered", None)]
    assert stages(two) == [("s2", None, "new", "entered", None)]
    assert [(s.shipment_id, s.lines) for s in progress(two).shipments] == [
        ("s1", [ShipmentLine(sku="A", quantity=1)]),
        ("s2", [ShipmentLine(sku="B", quantity=1)]),
    ]
    assert {sid: s.lines for sid, s in uow.known_shipments.items()} == {"s1": {"A": 1}, "s2": {"B": 1}}


async def test_a_location_update_is_kept_and_the_next_allocations_use_it() -> None:
    uow = await with_locations(("loc", "dropship", None))
    await in_fulfillment(uow, ("s1", "loc", {"A": 1}))
    await with_locations_on(uow, ("loc", "warehouse", BERLIN))
    await in_fulfillment(uow, ("s2", "loc", {"A": 1}))
    assert [uow.known_shipments[s].pipeline for s in ("s1", "s2")] == ["dropship", "standard"]
    assert uow.known_locations["loc"].lat == BERLIN[0]


async def with_locations_on(
    uow: FakeFulfillmentUnit, *locations: tuple[str, str, tuple[float, float]]
) -> None:
    fresh = await with_locations(*locations)
    uow.known_locations.update(fresh.known_locations)


# Stage updates


async def test_stages_move_forward_and_may_skip_but_never_go_back() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    await in_fulfillment(uow, ("s1", "wh", {"A": 1}))
    [skipped] = applied(await move(uow, update("s1", "packed")))
    assert stages(skipped) == [("s1", "new", "packed", "moved", None)]
    [backwards] = await move(uow, update("s1", "picking", update_id="s1:back"))
    assert isinstance(backwards, Rejected) and backwards.cause == "stage_backwards"
    [unknown] = await move(uow, update("s1", "teleported"))
    assert isinstance(unknown, Rejected) and unknown.cause == "unknown_stage"
    assert uow.known_shipments["s1"].stage == "packed"
    assert uow.applied["s1:back"] == ("s1", "stage_backwards")
    assert uow.applied["s1:packed"] == ("s1", "moved")


async def test_a_repeated_update_id_changes_nothing_even_when_it_names_another_stage() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    await in_fulfillment(uow, ("s1", "wh", {"A": 1}))
    applied(await move(uow, update("s1", "packed")))
    assert await move(uow, update("s1", "delivered", update_id="s1:packed")) == [[]]
    in_one_batch = await move(
        uow, update("s1", "shipped", update_id="u"), update("s1", "delivered", update_id="u")
    )
    assert [len(events) for events in applied(in_one_batch)] == [3, 0]  # moved, shipped, progress
    assert uow.known_shipments["s1"].stage == "shipped"


async def test_a_refused_update_repeated_is_not_dead_lettered_twice() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    await in_fulfillment(uow, ("s1", "wh", {"A": 1}))
    applied(await move(uow, update("s1", "packed")))
    [refused] = await move(uow, update("s1", "picking", update_id="back"))
    assert isinstance(refused, Rejected)
    assert await move(uow, update("s1", "picking", update_id="back")) == [[]]


async def test_two_updates_of_one_shipment_in_a_batch_see_each_other() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    await in_fulfillment(uow, ("s1", "wh", {"A": 1}), ("s2", "wh", {"B": 1}))
    uow.calls.clear()
    results = await move(uow, update("s1", "picking"), update("s2", "picking"), update("s1", "packed"))
    assert [stages(events) for events in applied(results)] == [
        [("s1", "new", "picking", "moved", None)],
        [("s2", "new", "picking", "moved", None)],
        [("s1", "picking", "packed", "moved", None)],
    ]
    assert uow.calls == [
        "orders.lock_by_shipment",
        "shipments.of_orders",
        "updates.claim",
        "shipments.save",
        "updates.record",
    ]
    first, back = await move(uow, update("s2", "packed"), update("s2", "picking", update_id="s2:back"))
    assert not isinstance(first, Rejected)
    assert isinstance(back, Rejected) and back.cause == "stage_backwards"


async def test_an_update_for_a_shipment_fulfillment_does_not_know_is_dead_lettered() -> None:
    uow = FakeFulfillmentUnit()
    [result] = await move(uow, update("ghost", "picking"))
    assert isinstance(result, Rejected) and result.cause == "unknown_shipment"
    assert uow.applied == {}


async def test_a_failed_parcel_leaves_its_pipeline_is_written_off_and_its_order_awaits_stock() -> None:
    uow = await with_locations(("wh1", "warehouse", None), ("wh2", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh1", {"FRAG": 2}))
    [events] = applied(await move(uow, update("s1", "failed", note="damaged")))
    assert stages(events) == [("s1", "new", None, "left", "damaged")]
    [failed] = of_type(events, ShipmentFailed)
    assert (failed.shipment_id, failed.location_id, failed.lines, failed.reason) == (
        "s1",
        "wh1",
        [ShipmentLine(sku="FRAG", quantity=2)],
        "damaged",
    )
    assert not of_type(events, OrderFulfillmentProgressed)  # nothing of the order is in a pipeline now
    assert uow.known_orders[fact.order_id].awaiting_resource
    assert not uow.known_shipments["s1"].active

    resourced = allocated(("s2", "wh2", {"FRAG": 2}), order_id=fact.order_id)
    [events] = applied(await receive_allocations([resourced], uow, CONFIG))
    assert stages(events) == [("s2", None, "new", "entered", None)]
    announced = progress(events)
    assert (announced.status, [s.shipment_id for s in announced.shipments]) == ("in_fulfillment", ["s2"])
    assert not uow.known_orders[fact.order_id].awaiting_resource


async def test_a_shipment_that_left_its_pipeline_takes_no_more_updates() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    await in_fulfillment(uow, ("s1", "wh", {"A": 1}))
    applied(await move(uow, update("s1", "failed")))
    [late] = await move(uow, update("s1", "picking"))
    assert isinstance(late, Rejected) and late.cause == "shipment_not_active"


async def test_reaching_the_ship_point_ships_the_parcel_and_delivery_ends_the_pipeline() -> None:
    uow = await with_locations(("wh", "warehouse", BERLIN))
    fact = await in_fulfillment(uow, ("s1", "wh", {"BOOK": 1}))
    applied(await move(uow, update("s1", "picking"), update("s1", "packed")))
    [events] = applied(await move(uow, update("s1", "shipped", carrier="DHL", tracking_number="JD0001")))
    assert stages(events) == [("s1", "packed", "shipped", "moved", None)]
    [shipped] = of_type(events, ShipmentShipped)
    assert (shipped.shipment_id, shipped.location_id, shipped.lines) == (
        "s1",
        "wh",
        [ShipmentLine(sku="BOOK", quantity=1)],
    )
    announced = progress(events)
    assert announced.status == "shipped"
    assert [(s.carrier, s.tracking_number) for s in announced.shipments] == [("DHL", "JD0001")]

    [events] = applied(await move(uow, update("s1", "delivered")))
    assert stages(events) == [
        ("s1", "shipped", "delivered", "moved", None),
        ("s1", "delivered", None, "left", "completed"),
    ]
    assert not of_type(events, ShipmentShipped)
    announced = progress(events)
    assert (announced.status, announced.eta) == ("delivered", None)
    assert [s.stage for s in announced.shipments] == ["delivered"]
    assert uow.known_orders[fact.order_id].progress == "delivered"


async def test_skipping_past_the_ship_point_still_ships_the_parcel() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    await in_fulfillment(uow, ("s1", "wh", {"A": 1}))
    [events] = applied(await move(uow, update("s1", "delivered")))
    assert len(of_type(events, ShipmentShipped)) == 1
    assert progress(events).status == "delivered"


async def test_stage_moves_that_leave_the_orders_progress_as_it_was_announce_nothing() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    await in_fulfillment(uow, ("s1", "wh", {"A": 1}))
    uow.calls.clear()
    [events] = applied(await move(uow, update("s1", "picking")))
    assert not of_type(events, OrderFulfillmentProgressed)
    assert "locations.of" not in uow.calls and "orders.save" not in uow.calls


async def test_an_order_is_partially_shipped_once_one_of_its_parcels_has_left() -> None:
    uow = await with_locations(("wh1", "warehouse", None), ("wh2", "warehouse", None))
    await in_fulfillment(uow, ("s1", "wh1", {"X": 1}), ("s2", "wh2", {"Y": 1}))
    [events] = applied(await move(uow, update("s1", "shipped")))
    assert progress(events).status == "partially_shipped"
    [events] = applied(await move(uow, update("s2", "shipped")))
    assert progress(events).status == "shipped"


async def test_a_parcel_failing_after_its_sibling_shipped_keeps_the_order_partially_shipped() -> None:
    uow = await with_locations(("wh1", "warehouse", None), ("wh2", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh1", {"X": 1}), ("s2", "wh2", {"Y": 1}))
    applied(await move(uow, update("s1", "shipped")))
    [events] = applied(await move(uow, update("s2", "failed", note="damaged")))
    assert of_type(events, ShipmentFailed)
    assert not of_type(events, OrderFulfillmentProgressed)  # still partially shipped: nothing new to say
    assert uow.known_orders[fact.order_id].awaiting_resource

    waiting = allocated(("s1", "wh1", {"X": 1}), order_id=fact.order_id, backordered={"Y": 1})
    [events] = applied(await receive_allocations([waiting], uow, CONFIG))
    assert progress(events).status == "partially_shipped"  # never `shipped` while Y waits for stock
    assert progress(events).awaiting_stock, "the status says part of the order is in no shipment"

    remainder_cancelled = allocated(("s1", "wh1", {"X": 1}), order_id=fact.order_id)
    [events] = applied(await receive_allocations([remainder_cancelled], uow, CONFIG))
    announced = progress(events)
    assert (announced.status, [s.shipment_id for s in announced.shipments]) == ("shipped", ["s1"])
    assert not announced.awaiting_stock


async def test_a_sibling_shipping_after_a_failed_parcel_was_backordered_says_the_rest_waits() -> None:
    """The order chaos found: Y failed and was backordered first, then X shipped; the status that
    announces X must not read as if X were the whole order."""
    uow = await with_locations(("wh1", "warehouse", None), ("wh2", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh1", {"X": 1}), ("s2", "wh2", {"Y": 1}))
    applied(await move(uow, update("s2", "failed", note="damaged")))
    waiting = allocated(("s1", "wh1", {"X": 1}), order_id=fact.order_id, backordered={"Y": 1})
    applied(await receive_allocations([waiting], uow, CONFIG))
    [events] = applied(await move(uow, update("s1", "shipped")))
    announced = progress(events)
    assert (announced.status, announced.awaiting_stock) == ("partially_shipped", True)


# Cancels


async def test_a_whole_order_not_yet_shipped_is_cancelled_and_its_shipments_leave_their_pipelines() -> None:
    uow = await with_locations(("wh1", "warehouse", None), ("wh2", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh1", {"A": 2}), ("s2", "wh2", {"B": 1}))
    applied(await move(uow, update("s2", "picking")))
    events = await decide_cancel(cancel(fact.order_id), uow, CONFIG)
    assert stages(events) == [
        ("s1", "new", None, "left", "cancelled"),
        ("s2", "picking", None, "left", "cancelled"),
    ]
    [accepted] = of_type(events, OrderCancelAccepted)
    assert accepted.whole
    assert [(s.shipment_id, s.location_id, s.lines) for s in accepted.release] == [
        ("s1", "wh1", [ShipmentLine(sku="A", quantity=2)]),
        ("s2", "wh2", [ShipmentLine(sku="B", quantity=1)]),
    ]
    assert not any(s.active for s in uow.known_shipments.values())


async def test_a_partial_cancel_releases_exactly_the_cancelled_lines() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh", {"A": 3, "B": 1}))
    events = await decide_cancel(cancel(fact.order_id, {"A": 2, "B": 1}), uow, CONFIG)
    assert stages(events) == []
    [accepted] = of_type(events, OrderCancelAccepted)
    assert not accepted.whole
    assert [(s.shipment_id, s.lines) for s in accepted.release] == [
        ("s1", [ShipmentLine(sku="A", quantity=2), ShipmentLine(sku="B", quantity=1)])
    ]
    kept = uow.known_shipments["s1"]
    assert (kept.active, kept.lines) == (True, {"A": 1})


async def test_cancelling_after_shipping_is_refused_with_already_shipped() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh", {"A": 2}))
    applied(await move(uow, update("s1", "shipped")))
    for lines in (None, {"A": 1}):
        [refused] = await decide_cancel(cancel(fact.order_id, lines), uow, CONFIG)
        assert isinstance(refused, OrderCancelRefused)
        assert [r.code for r in refused.reasons] == ["already_shipped"]
    assert uow.known_shipments["s1"].lines == {"A": 2}


async def test_cancelling_lines_the_order_never_had_is_refused() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh", {"A": 1}))
    for lines in ({"GHOST": 1}, {"A": 2}):
        [refused] = await decide_cancel(cancel(fact.order_id, lines), uow, CONFIG)
        assert isinstance(refused, OrderCancelRefused)
        assert [r.code for r in refused.reasons] == ["invalid_cancel_lines"]
    assert uow.known_shipments["s1"].lines == {"A": 1}


async def test_the_part_not_yet_shipped_stays_cancellable_after_a_sibling_shipped() -> None:
    uow = await with_locations(("wh1", "warehouse", None), ("wh3", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh1", {"X": 1}), ("s3", "wh3", {"Y": 1}))
    applied(await move(uow, update("s1", "shipped")))
    events = await decide_cancel(cancel(fact.order_id, {"Y": 1}), uow, CONFIG)
    assert stages(events) == [("s3", "new", None, "left", "cancelled")]
    [accepted] = of_type(events, OrderCancelAccepted)
    assert not accepted.whole
    assert [s.shipment_id for s in accepted.release] == ["s3"]
    [refused] = await decide_cancel(cancel(fact.order_id), uow, CONFIG)
    assert isinstance(refused, OrderCancelRefused) and refused.reasons[0].code == "already_shipped"


async def test_cancelling_the_rest_of_an_order_whose_other_parcel_arrived_announces_it_delivered() -> None:
    uow = await with_locations(("wh1", "warehouse", None), ("wh3", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh1", {"X": 1}), ("s3", "wh3", {"Y": 1}))
    applied(await move(uow, update("s1", "delivered")))
    events = await decide_cancel(cancel(fact.order_id, {"Y": 1}), uow, CONFIG)
    assert (progress(events).status, [s.shipment_id for s in progress(events).shipments]) == (
        "delivered",
        ["s1"],
    )
    assert uow.known_orders[fact.order_id].progress == "delivered"


async def test_cancelling_the_rest_of_an_order_whose_parcel_was_lost_and_refunded_announces_it_refunded() -> (
    None
):
    uow = await with_locations(("wh1", "warehouse", None), ("wh3", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh1", {"X": 1}), ("s3", "wh3", {"Y": 1}))
    applied(await move(uow, update("s1", "shipped")))
    refunding = await apply_updates(
        [update("s1", "exception", exception="lost")], uow, CONFIG, reships=lambda _: False
    )
    applied(refunding)
    [refused] = await decide_cancel(cancel(fact.order_id), uow, CONFIG)  # part of it left: not whole
    assert isinstance(refused, OrderCancelRefused) and refused.reasons[0].code == "already_shipped"
    events = await decide_cancel(cancel(fact.order_id, {"Y": 1}), uow, CONFIG)
    assert progress(events).status == "refunded" and progress(events).shipments == []
    [accepted] = of_type(events, OrderCancelAccepted)
    assert not accepted.whole


async def test_a_cancel_that_leaves_the_progress_as_it_was_announces_nothing() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh", {"A": 3}))
    events = await decide_cancel(cancel(fact.order_id, {"A": 1}), uow, CONFIG)
    assert not of_type(events, OrderFulfillmentProgressed)


async def test_a_cancel_for_an_order_fulfillment_never_saw_is_dead_lettered() -> None:
    with pytest.raises(Rejected) as unknown:
        await decide_cancel(cancel(uuid4()), FakeFulfillmentUnit(), CONFIG)
    assert unknown.value.cause == "unknown_order"


# Edits


async def test_an_edit_before_the_ship_point_takes_every_shipment_out_for_allocation_to_release() -> None:
    uow = await with_locations(("wh", "warehouse", BERLIN), ("wh2", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh", {"A": 1}), ("s2", "wh2", {"B": 2}))
    applied(await move(uow, update("s1", "packed")))
    request = edit(fact)
    *left, accepted = await decide_edit(request, uow, CONFIG)
    assert isinstance(accepted, OrderEditAccepted) and accepted.order == request.order
    assert sorted((s.shipment_id, [(x.sku, x.quantity) for x in s.lines]) for s in accepted.release) == [
        ("s1", [("A", 1)]),
        ("s2", [("B", 2)]),
    ]
    assert sorted((e.shipment_id, e.change, e.reason) for e in left if isinstance(e, StageChanged)) == [
        ("s1", "left", "edited"),
        ("s2", "left", "edited"),
    ]
    assert not any(s.active for s in await uow.shipments.of_orders([fact.order_id]))


async def test_an_edit_after_a_shipment_passed_its_ship_point_is_refused_and_changes_nothing() -> None:
    uow = await with_locations(("wh", "warehouse", BERLIN), ("wh2", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh", {"A": 1}), ("s2", "wh2", {"B": 1}))
    applied(await move(uow, update("s1", "shipped")))
    before = await uow.shipments.of_orders([fact.order_id])
    [refused] = await decide_edit(edit(fact), uow, CONFIG)
    assert isinstance(refused, OrderEditRefused)
    assert [r.code for r in refused.reasons] == ["already_shipped"]
    assert await uow.shipments.of_orders([fact.order_id]) == before


async def test_a_stage_update_for_a_shipment_an_edit_took_out_is_refused() -> None:
    uow = await with_locations(("wh", "warehouse", BERLIN))
    fact = await in_fulfillment(uow, ("s1", "wh", {"A": 1}))
    await decide_edit(edit(fact), uow, CONFIG)
    [outcome] = await move(uow, update("s1", "shipped"))
    assert isinstance(outcome, Rejected)


# Wiring


def settings(**kwargs: Any) -> FulfillmentSettings:
    return FulfillmentSettings(
        kafka_bootstrap_servers="unused:9092", kafka_security=KafkaSecurity(), **kwargs
    )


async def test_the_router_handles_every_type_fulfillment_reads_and_routes_every_event_it_causes() -> None:
    bound = build_router(settings()).bind()
    assert [b.name for b in bound] == [i.name for i in SERVICE_TOPOLOGY["fulfillment"].inputs]
    uow = await with_locations(("wh", "warehouse", BERLIN), ("wh2", "warehouse", None))
    fact = await in_fulfillment(uow, ("s1", "wh", {"A": 1}), ("s2", "wh2", {"B": 1}), ("s3", "wh", {"C": 1}))
    caused: list[Event] = []
    for events in applied(await move(uow, update("s1", "shipped"), update("s2", "failed"))):
        caused.extend(events)
    caused.extend(await decide_cancel(cancel(fact.order_id, {"C": 1}), uow, CONFIG))
    caused.extend(await decide_cancel(cancel(fact.order_id), uow, CONFIG))
    caused.extend(await decide_edit(edit(fact), uow, CONFIG))
    caused.extend(await decide_edit(edit(await in_fulfillment(uow, ("s8", "wh", {"A": 1}))), uow, CONFIG))
    returned = await in_fulfillment(uow, ("s4", "wh", {"SKU-1": 1}))
    caused.extend(*applied(await move(uow, update("s4", "delivered"))))
    request = ReturnRequested(
        return_id="rma-1", order_id=returned.order_id, lines=[ReturnLine(sku="SKU-1", quantity=1)]
    )
    caused.extend(await request_return(request, uow, CONFIG, lambda channel: Returns()))
    receipt = ReturnReceived(
        return_id="rma-1",
        location_id="wh",
        lines=[ReceivedLine(sku="SKU-1", quantity=1, condition=ReturnCondition.RESELLABLE)],
    )
    caused.extend(await receive_return(receipt, uow, CONFIG, lambda channel: Returns()))
    with_sla = replace(
        CONFIG,
        pipelines=tuple(
            replace(p, stages=tuple(replace(st, sla_hours=1.0) for st in p.stages)) for p in CONFIG.pipelines
        ),
    )
    await receive_allocations([allocated(("s5", "wh", {"SKU-1": 1}))], uow, with_sla)
    late = update("s5", "picking").model_copy(update={"occurred_at": datetime.now(UTC) - timedelta(hours=2)})
    await apply_updates([late], uow, with_sla)
    caused.extend(await stage_late(uow.timers.scheduled[(STAGE_SLA, "s5")], uow, with_sla))
    await in_fulfillment(uow, ("s6", "wh", {"SKU-1": 1}))
    await move(uow, update("s6", "shipped"))
    caused.extend(*applied(await move(uow, update("s6", "exception", exception="lost"))))
    assert {type(e) for e in caused} == set(SERVICE_TOPOLOGY["fulfillment"].emits)
    assert len(bound[0].route(caused)) >= len(caused)  # every one declared, each to its topics


def test_operators_may_replace_the_packaged_pipelines_with_their_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "pipelines.yaml"
    own.write_text(
        "version: 7\npipelines:\n  - name: only\n    ships_at: out\n    stages: [{name: in}, {name: out}]\n"
    )
    monkeypatch.setenv("BATON_PIPELINES_FILE", str(own))
    configured = settings()
    assert configured.pipelines_file == own
    assert load_pipelines(configured.pipelines_file).version == 7
    build_router(configured).bind()
    monkeypatch.delenv("BATON_PIPELINES_FILE")
    assert settings().pipelines_file is None and load_pipelines(None) is CONFIG
