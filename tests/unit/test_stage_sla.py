"""Stage deadlines (SLAs): the pure rules, the late-stage ETA, and fulfillment's timer use case."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from libs.contracts.fulfillment import FulfillmentUpdate
from libs.contracts.lifecycle import OrderAllocated, OrderFulfillmentProgressed
from libs.contracts.orders import OrderDetails, Shipment, ShipmentLine
from libs.contracts.sla import SlaBreached
from libs.platform.timers import Timer
from services.fulfillment.app.use_cases import (
    apply_updates,
    load_pipelines,
    receive_allocations,
    ship_by_missed,
    stage_late,
)
from services.fulfillment.domain.pipelines import eta, parse_config
from services.fulfillment.domain.shipments import Shipment as Parcel
from services.fulfillment.domain.sla import (
    SHIP_BY,
    STAGE_SLA,
    Deadline,
    deadline,
    is_late,
    missed_ship_by,
    ship_by,
)
from tests.support.orders import order, stage_update
from tests.unit.fakes.fulfillment import FakeFulfillmentUnit

pytestmark = pytest.mark.unit

PACKAGED = load_pipelines()
CONFIG = replace(
    PACKAGED,
    pipelines=tuple(
        replace(
            p,
            stages=tuple(
                replace(stage, sla_hours={"picking": 24.0, "packed": 12.0}.get(stage.name))
                for stage in p.stages
            ),
        )
        for p in PACKAGED.pipelines
    ),
)
"""The packaged pipelines (which declare no SLA) with deadlines for picking and packing."""
AT = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def parcel(stage: str, entered: datetime = AT, active: bool = True) -> Parcel:
    return Parcel("s1", uuid4(), "wh", "standard", stage, active, {"A": 1}, entered)


def test_a_stage_with_sla_hours_gives_the_shipment_a_deadline_and_one_without_gives_none() -> None:
    due = deadline(parcel("picking"), CONFIG)
    assert due is not None and (due.stage, due.due_at) == ("picking", AT + timedelta(hours=24))
    assert deadline(parcel("delivered", active=False), CONFIG) is None
    assert Deadline.of("s1", due.payload()) == due


def test_a_shipment_is_late_only_if_still_in_the_same_visit_of_the_stage() -> None:
    due = Deadline("s1", "picking", AT, 24)
    assert is_late(parcel("picking"), due)
    assert not is_late(parcel("packed"), due)  # moved on
    assert not is_late(parcel("picking", AT + timedelta(minutes=1)), due)  # another visit
    assert not is_late(parcel("picking", active=False), due)  # failed or cancelled
    assert not is_late(None, due)


def test_sla_hours_must_be_positive() -> None:
    raw = {
        "version": 1,
        "pipelines": [
            {"name": "p", "ships_at": "b", "stages": [{"name": "a", "sla_hours": 0}, {"name": "b"}]}
        ],
    }
    with pytest.raises(ValueError, match="sla_hours must be a positive number"):
        parse_config(raw)


def test_a_late_stage_is_taken_to_end_now_in_the_eta() -> None:
    standard = CONFIG.get("standard")
    on_time = eta(standard, "picking", AT, None, 600)
    assert on_time == AT + timedelta(hours=8 + 4 + 24)
    now = AT + timedelta(hours=30)
    assert eta(standard, "picking", AT, None, 600, now) == now + timedelta(hours=4 + 24)
    assert eta(standard, "picking", AT, None, 600, AT + timedelta(hours=1)) == on_time


async def in_picking(uow: FakeFulfillmentUnit, entered: datetime) -> OrderAllocated:
    fact = OrderAllocated(
        order_id=uuid4(),
        order=OrderDetails.model_validate(order()),
        shipments=[
            Shipment(shipment_id="s1", location_id="wh", lines=[ShipmentLine(sku="SKU-1", quantity=1)])
        ],
    )
    await receive_allocations([fact], uow, CONFIG)
    update = FulfillmentUpdate.model_validate(
        stage_update("s1", "picking") | {"occurred_at": entered.isoformat()}
    )
    await apply_updates([update], uow, CONFIG)
    return fact


async def test_entering_a_stage_moves_the_shipments_deadline_and_a_late_one_is_reported_with_a_new_eta() -> (
    None
):
    uow = FakeFulfillmentUnit()
    entered = datetime.now(UTC) - timedelta(hours=30)
    fact = await in_picking(uow, entered)
    timer = uow.timers.scheduled[(STAGE_SLA, "s1")]
    assert (timer.due_at, timer.payload["stage"]) == (entered + timedelta(hours=24), "picking")

    events = await stage_late(timer, uow, CONFIG)
    [breach] = [e for e in events if isinstance(e, SlaBreached)]
    assert (breach.order_id, breach.shipment_id, breach.stage, breach.sla_hours) == (
        fact.order_id,
        "s1",
        "picking",
        24,
    )
    assert breach.overdue_seconds >= 6 * 3600
    [progress] = [e for e in events if isinstance(e, OrderFulfillmentProgressed)]
    assert progress.status == "in_fulfillment" and progress.eta == breach.eta
    assert breach.eta is not None and breach.eta > datetime.now(UTC) + timedelta(hours=4 + 24 - 1)


async def test_a_deadline_that_finds_the_shipment_moved_on_reports_nothing() -> None:
    uow = FakeFulfillmentUnit()
    await in_picking(uow, datetime.now(UTC) - timedelta(hours=30))
    stale = uow.timers.scheduled[(STAGE_SLA, "s1")]
    await apply_updates([FulfillmentUpdate.model_validate(stage_update("s1", "packed"))], uow, CONFIG)
    assert uow.timers.scheduled[(STAGE_SLA, "s1")].payload["stage"] == "packed"
    assert await stage_late(stale, uow, CONFIG) == []
    assert await stage_late(Timer(STAGE_SLA, "nobody", AT, stale.payload), uow, CONFIG) == []


def test_a_ship_by_cut_off_starts_when_the_shipment_enters_and_is_missed_only_short_of_the_ship_point() -> (
    None
):
    with_cut_off = replace(CONFIG, pipelines=tuple(replace(p, ship_by_hours=6.0) for p in CONFIG.pipelines))
    due = ship_by(parcel("new"), with_cut_off)
    assert due is not None and due.due_at == AT + timedelta(hours=6)
    assert ship_by(parcel("new"), CONFIG) is None  # the pipeline has no cut-off
    assert missed_ship_by(parcel("packed"), with_cut_off)
    assert not missed_ship_by(parcel("shipped"), with_cut_off)
    assert not missed_ship_by(parcel("packed", active=False), with_cut_off)
    assert not missed_ship_by(None, with_cut_off)


async def test_a_missed_ship_by_is_reported_once_as_ship_by_with_the_stage_it_is_in() -> None:
    with_cut_off = replace(CONFIG, pipelines=tuple(replace(p, ship_by_hours=1.0) for p in CONFIG.pipelines))
    uow = FakeFulfillmentUnit()
    fact = OrderAllocated(
        order_id=uuid4(),
        order=OrderDetails.model_validate(order()),
        shipments=[
            Shipment(shipment_id="s1", location_id="wh", lines=[ShipmentLine(sku="SKU-1", quantity=1)])
        ],
    )
    await receive_allocations([fact], uow, with_cut_off)
    timer = uow.timers.scheduled[(SHIP_BY, "s1")]
    [breach, _progress] = await ship_by_missed(timer, uow, with_cut_off)  # due: the worker fires it
    assert isinstance(breach, SlaBreached)
    assert (breach.sla, breach.stage, breach.sla_hours) == ("ship_by", "new", 1.0)
    await apply_updates([FulfillmentUpdate.model_validate(stage_update("s1", "shipped"))], uow, with_cut_off)
    assert await ship_by_missed(timer, uow, with_cut_off) == []


def test_ship_by_hours_must_be_positive() -> None:
    raw = {
        "version": 1,
        "pipelines": [
            {"name": "p", "ships_at": "b", "ship_by_hours": -1, "stages": [{"name": "a"}, {"name": "b"}]}
        ],
    }
    with pytest.raises(ValueError, match="pipeline p: ship_by_hours must be a positive number"):
        parse_config(raw)
