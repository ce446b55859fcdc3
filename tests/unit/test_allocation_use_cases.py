"""Allocation's use cases on in-memory ports: what each input causes, without Kafka or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from libs.contracts.envelope import Event
from libs.contracts.inventory import LocationUpdated, StockAdjusted
from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderBackordered,
    OrderCancelAccepted,
    OrderCancelForwarded,
    OrderCancelled,
    OrderCancelRefused,
    OrderCancelRequested,
    OrderValidated,
    ShipmentFailed,
    ShipmentShipped,
)
from libs.contracts.orders import OrderDetails, Shipment, ShipmentLine
from libs.contracts.privacy import ERASED, ERASED_EMAIL, ErasureApplied, ErasureRequested
from libs.contracts.returns import ReturnArrived
from libs.contracts.vocabulary import LocationKind
from libs.platform.messaging import Rejected
from services.allocation.app.ports import OversellRefused
from services.allocation.app.use_cases import (
    adjust_stock,
    allocate_orders,
    erase_customer,
    fail_shipment,
    release_cancelled,
    request_cancel,
    restock_return,
    rules_from,
    ship_shipment,
    update_location,
)
from services.allocation.domain.allocations import AllocationStatus, Reservation
from services.allocation.entry import build_router, skus_to_lock
from services.allocation.settings import AllocationSettings
from tests.support.orders import erasure_request, order
from tests.unit.fakes.allocation import FakeAllocationUnit

pytestmark = pytest.mark.unit

RULES = rules_from(3, "0.01")


def validated(
    *lines: tuple[str, int], method: str = "standard", customer: str | None = None
) -> OrderValidated:
    details = OrderDetails.model_validate(
        order(
            lines=[(sku, quantity, "10.00") for sku, quantity in lines], method=method, customer_id=customer
        )
    )
    return OrderValidated(order_id=uuid4(), order=details)


def location(
    location_id: str, kind: str = "warehouse", cost: str = "5.00", active: bool = True
) -> LocationUpdated:
    return LocationUpdated(
        location_id=location_id,
        name=location_id,
        kind=LocationKind(kind),
        countries=["DE"],
        cost_per_shipment=Decimal(cost),
        active=active,
    )


def arrival(sku: str, location_id: str, delta: int) -> StockAdjusted:
    return StockAdjusted(adjustment_id=str(uuid4()), sku=sku, location_id=location_id, delta=delta)


async def with_stock(
    *stock: tuple[str, str, int], locations: Sequence[LocationUpdated] = ()
) -> FakeAllocationUnit:
    """Locations (a warehouse per location named in ``stock`` unless given) and their units."""
    uow = FakeAllocationUnit()
    named = {loc.location_id for loc in locations}
    for update in [
        *locations,
        *(location(loc) for loc in dict.fromkeys(s[1] for s in stock) if loc not in named),
    ]:
        await update_location(update, uow, RULES)
    for sku, location_id, units in stock:
        await adjust_stock(arrival(sku, location_id, units), uow, RULES)
    uow.state.calls.clear()
    return uow


def units(uow: FakeAllocationUnit, sku: str, location_id: str) -> tuple[int, int]:
    """(on hand, reserved)."""
    level = uow.state.units(sku, location_id)
    return level.on_hand, level.reserved


async def allocate(uow: FakeAllocationUnit, *facts: OrderValidated) -> list[Event]:
    """Each order's one fact, in order."""
    results = await allocate_orders(facts, uow, RULES)
    assert all(len(r) == 1 for r in results), results
    return [r[0] for r in results]


def allocated(events: Sequence[Event]) -> list[OrderAllocated]:
    return [e for e in events if isinstance(e, OrderAllocated)]


def shipments(event: Event) -> list[tuple[str, list[tuple[str, int]]]]:
    assert isinstance(event, OrderAllocated), event
    return [(s.location_id, [(line.sku, line.quantity) for line in s.lines]) for s in event.shipments]


def status(uow: FakeAllocationUnit, order_id: UUID) -> AllocationStatus:
    return uow.state.orders[order_id].status


def cancel(order_id: UUID, lines: list[tuple[str, int]] | None = None) -> OrderCancelRequested:
    return OrderCancelRequested(
        order_id=order_id,
        request_id=str(uuid4()),
        lines=[ShipmentLine(sku=s, quantity=q) for s, q in lines] if lines is not None else None,
    )


def accepted(event: OrderAllocated, lines: list[tuple[str, int]] | None = None) -> OrderCancelAccepted:
    """Fulfillment took ``lines`` (the whole order if None) out of its pipelines."""
    wanted = dict(lines) if lines is not None else None
    release = []
    for s in event.shipments:
        taken = [
            line if wanted is None else ShipmentLine(sku=line.sku, quantity=wanted[line.sku])
            for line in s.lines
            if wanted is None or line.sku in wanted
        ]
        if taken:
            release.append(Shipment(shipment_id=s.shipment_id, location_id=s.location_id, lines=taken))
    return OrderCancelAccepted(
        order_id=event.order_id,
        request_id=str(uuid4()),
        lines=None if lines is None else [ShipmentLine(sku=sku, quantity=q) for sku, q in lines],
        release=release,
        whole=lines is None,
    )


def parcel(event: OrderAllocated, location_id: str) -> Shipment:
    return next(s for s in event.shipments if s.location_id == location_id)


def shipped(event: OrderAllocated, location_id: str) -> ShipmentShipped:
    s = parcel(event, location_id)
    return ShipmentShipped(
        order_id=event.order_id, shipment_id=s.shipment_id, location_id=location_id, lines=s.lines
    )


def failed(event: OrderAllocated, location_id: str) -> ShipmentFailed:
    s = parcel(event, location_id)
    return ShipmentFailed(
        order_id=event.order_id,
        shipment_id=s.shipment_id,
        location_id=location_id,
        lines=s.lines,
        reason="damaged",
    )


# Validated orders


async def test_a_validated_order_reserves_its_units_and_is_allocated_with_its_shipment() -> None:
    uow = await with_stock(("MUG", "wh", 5))
    fact = validated(("MUG", 2))
    [event] = await allocate(uow, fact)
    assert isinstance(event, OrderAllocated) and event.order_id == fact.order_id and event.order == fact.order
    assert shipments(event) == [("wh", [("MUG", 2)])]
    assert event.backordered_lines == []
    assert units(uow, "MUG", "wh") == (5, 2)
    assert status(uow, fact.order_id) is AllocationStatus.ALLOCATED


async def test_two_orders_for_the_last_unit_in_one_batch_allocate_exactly_one() -> None:
    uow = await with_stock(("LAST", "wh", 1))
    first, second = validated(("LAST", 1)), validated(("LAST", 1))
    one, other = await allocate(uow, first, second)
    assert isinstance(one, OrderAllocated) and isinstance(other, OrderBackordered)
    assert [(r.code, r.sku) for r in other.reasons] == [("insufficient_stock", "LAST")]
    assert units(uow, "LAST", "wh") == (1, 1)


async def test_an_order_that_cannot_be_covered_whole_is_backordered_and_leaves_the_units_to_the_next() -> (
    None
):
    uow = await with_stock(("A", "wh", 2), ("B", "wh", 1))
    greedy, modest = validated(("A", 2), ("B", 2)), validated(("A", 2))
    backordered, fits = await allocate(uow, greedy, modest)
    assert isinstance(backordered, OrderBackordered) and [r.sku for r in backordered.reasons] == ["B"]
    assert shipments(fits) == [("wh", [("A", 2)])]
    assert units(uow, "A", "wh") == (2, 2) and units(uow, "B", "wh") == (1, 0)


async def test_a_batch_of_orders_reads_and_writes_stock_once_for_all_of_them() -> None:
    uow = await with_stock(("A", "wh", 50), ("B", "wh", 50), ("C", "store", 50))
    facts = [validated(("A", 1), ("B", 1)) for _ in range(10)] + [validated(("C", 100)) for _ in range(5)]
    events = await allocate(uow, *facts)
    assert [type(e) for e in events] == [OrderAllocated] * 10 + [OrderBackordered] * 5
    assert dict(uow.state.calls) == {
        "allocations.known": 1,
        "stock.lock": 1,
        "locations.active": 1,
        "stock.reserve": 1,
        "allocations.add": 1,
    }


async def test_an_order_seen_before_or_twice_in_one_batch_is_allocated_once() -> None:
    uow = await with_stock(("MUG", "wh", 5))
    fact = validated(("MUG", 1))
    again = OrderValidated(order_id=fact.order_id, order=fact.order)
    results = await allocate_orders([fact, again], uow, RULES)
    assert [len(r) for r in results] == [1, 0]
    assert await allocate_orders([again], uow, RULES) == [[]]
    assert units(uow, "MUG", "wh") == (5, 1)


async def test_an_order_no_single_location_can_ship_is_split_across_the_fewest_locations() -> None:
    uow = await with_stock(("A", "w1", 3), ("B", "w2", 3), ("A", "w3", 1), ("B", "w3", 1))
    [event] = await allocate(uow, validated(("A", 2), ("B", 2)))
    assert shipments(event) == [("w1", [("A", 2)]), ("w2", [("B", 2)])]


async def test_express_orders_ship_only_from_warehouses() -> None:
    uow = await with_stock(
        ("A", "store", 5),
        locations=[location("store", kind="store", cost="1.00"), location("wh", cost="9.00")],
    )
    express = validated(("A", 1), method="express")
    [nothing] = await allocate(uow, express)
    assert isinstance(nothing, OrderBackordered)
    [woken] = allocated(await adjust_stock(arrival("A", "wh", 1), uow, RULES))
    assert woken.order_id == express.order_id and shipments(woken) == [("wh", [("A", 1)])]
    [standard] = await allocate(uow, validated(("A", 1)))
    assert shipments(standard) == [("store", [("A", 1)])]


async def test_a_reservation_the_stock_cannot_cover_is_refused_whole() -> None:
    uow = await with_stock(("A", "wh", 1))
    order_id = uuid4()
    too_many = [Reservation(order_id, "s1", "wh", "A", 1), Reservation(order_id, "s2", "wh", "A", 1)]
    with pytest.raises(OversellRefused):
        await uow.stock.reserve(too_many)
    assert units(uow, "A", "wh") == (1, 0)


# Stock and locations


async def test_an_adjustment_applies_once_and_a_count_replaces_the_figure() -> None:
    uow = await with_stock(("A", "wh", 5))
    received = arrival("A", "wh", 3)
    await adjust_stock(received, uow, RULES)
    await adjust_stock(received, uow, RULES)
    assert units(uow, "A", "wh") == (8, 0)
    counted = StockAdjusted(adjustment_id="count-1", sku="A", location_id="wh", on_hand=6, reason="count")
    await adjust_stock(counted, uow, RULES)
    assert units(uow, "A", "wh") == (6, 0)
    assert uow.state.adjustments["count-1"].delta == -2


async def test_an_adjustment_below_the_reserved_units_is_rejected() -> None:
    uow = await with_stock(("A", "wh", 5))
    await allocate(uow, validated(("A", 4)))
    with pytest.raises(Rejected) as refused:
        await adjust_stock(arrival("A", "wh", -2), uow, RULES)
    assert refused.value.cause == "adjustment_below_reserved"
    assert units(uow, "A", "wh") == (5, 4)


async def test_arriving_stock_goes_to_the_oldest_backorder_first() -> None:
    uow = await with_stock(locations=[location("wh")])
    oldest, younger = validated(("NEW", 1)), validated(("NEW", 1))
    await allocate(uow, oldest)
    await allocate(uow, younger)
    events = await adjust_stock(arrival("NEW", "wh", 1), uow, RULES)
    assert [e.order_id for e in allocated(events)] == [oldest.order_id]
    assert status(uow, younger.order_id) is AllocationStatus.BACKORDERED
    assert "NEW" in uow.state.serialised


async def test_backorders_of_one_batch_wait_in_the_order_they_came() -> None:
    uow = await with_stock(locations=[location("wh")])
    facts = [validated(("NEW", 1)) for _ in range(3)]
    await allocate(uow, *facts)
    events = await adjust_stock(arrival("NEW", "wh", 2), uow, RULES)
    assert [e.order_id for e in allocated(events)] == [f.order_id for f in facts[:2]]


async def test_a_backorder_that_still_cannot_ship_keeps_waiting_and_a_younger_one_gets_the_units() -> None:
    uow = await with_stock(locations=[location("wh")])
    big, small = validated(("NEW", 3)), validated(("NEW", 1))
    await allocate(uow, big, small)
    events = await adjust_stock(arrival("NEW", "wh", 2), uow, RULES)
    assert [e.order_id for e in allocated(events)] == [small.order_id]
    events = await adjust_stock(arrival("NEW", "wh", 2), uow, RULES)
    assert [e.order_id for e in allocated(events)] == [big.order_id]


async def test_every_release_goes_to_the_oldest_waiting_backorder_first() -> None:
    """A whole cancellation, a location re-activated and a partial cancel each free one unit: the
    oldest backorder still waiting gets it, never a younger one."""
    uow = await with_stock(
        ("FIFO", "wh", 2),
        ("OTHER", "wh", 1),
        ("FIFO", "store", 1),
        locations=[location("wh"), location("store", kind="store", active=False)],
    )
    [partial] = allocated(await allocate(uow, validated(("FIFO", 1), ("OTHER", 1))))
    [whole] = allocated(await allocate(uow, validated(("FIFO", 1))))
    waiting = [validated(("FIFO", 1)) for _ in range(3)]
    for fact in waiting:
        await allocate(uow, fact)
    oldest, middle, youngest = (f.order_id for f in waiting)

    events = await release_cancelled(accepted(whole), uow, RULES)
    assert [type(e) for e in events] == [OrderCancelled, OrderAllocated]
    assert [e.order_id for e in allocated(events)] == [oldest]

    events = await update_location(location("store", kind="store"), uow, RULES)
    assert [e.order_id for e in allocated(events)] == [middle]

    events = await release_cancelled(accepted(partial, [("FIFO", 1)]), uow, RULES)
    reduced, woken = allocated(events)
    assert shipments(reduced) == [("wh", [("OTHER", 1)])] and reduced.cancel_request_id is not None
    assert woken.order_id == youngest
    assert sum(units(uow, "FIFO", loc)[1] for loc in ("wh", "store")) == 3


async def test_a_deactivated_location_ships_nothing() -> None:
    uow = await with_stock(("A", "wh", 5))
    assert await update_location(location("wh", active=False), uow, RULES) == []
    [event] = await allocate(uow, validated(("A", 1)))
    assert isinstance(event, OrderBackordered)


# Parcels


async def test_a_shipped_parcel_leaves_the_stock() -> None:
    uow = await with_stock(("A", "wh", 5))
    [event] = allocated(await allocate(uow, validated(("A", 2))))
    assert await ship_shipment(shipped(event, "wh"), uow) == []
    assert units(uow, "A", "wh") == (3, 0) and uow.state.stock[("A", "wh")].shipped == 2
    assert await ship_shipment(shipped(event, "wh"), uow) == []
    assert units(uow, "A", "wh") == (3, 0)


async def test_a_failed_parcel_is_written_off_and_sourced_again_never_from_the_failing_location() -> None:
    uow = await with_stock(
        ("FRAG", "wh1", 3),
        ("FRAG", "wh2", 3),
        locations=[location("wh1", cost="1.00"), location("wh2", cost="2.00")],
    )
    [first] = allocated(await allocate(uow, validated(("FRAG", 1))))
    assert shipments(first) == [("wh1", [("FRAG", 1)])]
    [again] = await fail_shipment(failed(first, "wh1"), uow, RULES)
    assert shipments(again) == [("wh2", [("FRAG", 1)])]
    assert uow.state.stock[("FRAG", "wh1")].written_off == 1
    assert units(uow, "FRAG", "wh1") == (2, 0) and units(uow, "FRAG", "wh2") == (3, 1)
    assert await fail_shipment(failed(first, "wh1"), uow, RULES) == []


async def two_parcels_one_shipped_one_failed(
    spare: bool,
) -> tuple[FakeAllocationUnit, OrderAllocated, list[Event]]:
    """An order of X (only at wh1) and Y (only at wh2) ships as two parcels; wh1's leaves, wh2's
    fails. With ``spare``, a dearer wh3 holds one more Y."""
    uow = await with_stock(
        ("X", "wh1", 1),
        ("Y", "wh2", 1),
        *([("Y", "wh3", 1)] if spare else []),
        locations=[location("wh1", cost="1.00"), location("wh2", cost="2.00"), location("wh3", cost="9.00")],
    )
    [event] = allocated(await allocate(uow, validated(("X", 1), ("Y", 1))))
    await ship_shipment(shipped(event, "wh1"), uow)
    return uow, event, await fail_shipment(failed(event, "wh2"), uow, RULES)


async def test_a_failed_parcel_sourced_again_keeps_the_shipped_one_in_the_allocation() -> None:
    _, first, [again] = await two_parcels_one_shipped_one_failed(spare=True)
    assert isinstance(again, OrderAllocated)
    assert sorted(shipments(again)) == [("wh1", [("X", 1)]), ("wh3", [("Y", 1)])]
    assert parcel(again, "wh1").shipment_id == parcel(first, "wh1").shipment_id
    assert again.backordered_lines == []


async def test_a_failed_parcel_that_waits_for_stock_is_cancellable_by_lines_at_allocation() -> None:
    uow, event, [waits] = await two_parcels_one_shipped_one_failed(spare=False)
    assert isinstance(waits, OrderBackordered) and [(r.code, r.sku) for r in waits.reasons] == [
        ("insufficient_stock", "Y")
    ]
    assert status(uow, event.order_id) is AllocationStatus.BACKORDERED

    request = cancel(event.order_id, [("Y", 1)])
    [reduced] = await request_cancel(request, uow)
    assert isinstance(reduced, OrderAllocated) and reduced.cancel_request_id == request.request_id
    assert shipments(reduced) == [("wh1", [("X", 1)])] and reduced.backordered_lines == []
    assert status(uow, event.order_id) is AllocationStatus.ALLOCATED
    assert await adjust_stock(arrival("Y", "wh2", 1), uow, RULES) == []


async def test_part_of_a_waiting_remainder_is_cancelled_and_the_rest_keeps_waiting_in_its_place() -> None:
    uow = await with_stock(
        ("X", "wh1", 1), ("Y", "wh2", 3), locations=[location("wh1", cost="1.00"), location("wh2")]
    )
    [event] = allocated(await allocate(uow, validated(("X", 1), ("Y", 3))))
    await ship_shipment(shipped(event, "wh1"), uow)
    [waits] = await fail_shipment(failed(event, "wh2"), uow, RULES)
    assert isinstance(waits, OrderBackordered)
    younger = validated(("Y", 1))
    await allocate(uow, younger)

    [reduced] = await request_cancel(cancel(event.order_id, [("Y", 1)]), uow)
    assert isinstance(reduced, OrderAllocated)
    assert [(line.sku, line.quantity) for line in reduced.backordered_lines] == [("Y", 2)]
    events = await adjust_stock(arrival("Y", "wh2", 2), uow, RULES)
    [woken] = allocated(events)
    assert woken.order_id == event.order_id and woken.backordered_lines == []
    assert sorted(shipments(woken)) == [("wh1", [("X", 1)]), ("wh2", [("Y", 2)])]
    assert status(uow, younger.order_id) is AllocationStatus.BACKORDERED


async def test_a_waiting_remainder_is_allocated_when_stock_arrives_with_the_shipped_parcel_kept() -> None:
    uow, event, _ = await two_parcels_one_shipped_one_failed(spare=False)
    [woken] = allocated(await adjust_stock(arrival("Y", "wh2", 1), uow, RULES))
    assert sorted(shipments(woken)) == [("wh1", [("X", 1)]), ("wh2", [("Y", 1)])]
    assert parcel(woken, "wh2").shipment_id != parcel(event, "wh2").shipment_id
    assert status(uow, event.order_id) is AllocationStatus.ALLOCATED


async def test_a_second_failed_parcel_sourced_again_leaves_the_first_ones_remainder_waiting() -> None:
    uow = await with_stock(
        ("X", "wh1", 1),
        ("Y", "wh2", 1),
        ("Y", "wh3", 1),
        locations=[location("wh1", cost="1.00"), location("wh2", cost="2.00"), location("wh3", cost="9.00")],
    )
    [event] = allocated(await allocate(uow, validated(("X", 1), ("Y", 1))))
    [waits] = await fail_shipment(failed(event, "wh1"), uow, RULES)
    assert isinstance(waits, OrderBackordered)
    [again] = await fail_shipment(failed(event, "wh2"), uow, RULES)
    assert isinstance(again, OrderAllocated)
    assert shipments(again) == [("wh3", [("Y", 1)])]
    assert [(line.sku, line.quantity) for line in again.backordered_lines] == [("X", 1)]
    assert status(uow, event.order_id) is AllocationStatus.BACKORDERED


# Cancellations


async def test_cancelling_an_order_allocation_never_saw_cancels_it_and_a_late_validation_allocates_nothing() -> (
    None
):
    uow = await with_stock(("A", "wh", 5))
    fact = validated(("A", 1))
    [cancelled] = await request_cancel(cancel(fact.order_id), uow)
    assert isinstance(cancelled, OrderCancelled)
    assert await allocate_orders([fact], uow, RULES) == [[]]
    assert units(uow, "A", "wh") == (5, 0)
    [refused] = await request_cancel(cancel(fact.order_id), uow)
    assert isinstance(refused, OrderCancelRefused) and [r.code for r in refused.reasons] == [
        "already_cancelled"
    ]


async def test_lines_cannot_be_cancelled_before_the_order_holds_stock() -> None:
    uow = await with_stock(locations=[location("wh")])
    fact = validated(("A", 2))
    await allocate(uow, fact)
    [refused] = await request_cancel(cancel(fact.order_id, [("A", 1)]), uow)
    assert isinstance(refused, OrderCancelRefused)
    assert [r.code for r in refused.reasons] == ["partial_cancel_before_allocation"]
    assert status(uow, fact.order_id) is AllocationStatus.BACKORDERED


async def test_a_cancelled_backorder_is_never_allocated_later() -> None:
    uow = await with_stock(locations=[location("wh")])
    fact = validated(("A", 1))
    await allocate(uow, fact)
    [cancelled] = await request_cancel(cancel(fact.order_id), uow)
    assert isinstance(cancelled, OrderCancelled)
    assert await adjust_stock(arrival("A", "wh", 5), uow, RULES) == []
    assert status(uow, fact.order_id) is AllocationStatus.CANCELLED and units(uow, "A", "wh") == (5, 0)


async def test_cancelling_an_order_that_holds_stock_is_forwarded_to_fulfillment() -> None:
    uow = await with_stock(("A", "wh", 5))
    [event] = allocated(await allocate(uow, validated(("A", 2))))
    request = cancel(event.order_id, [("A", 1)])
    [forwarded] = await request_cancel(request, uow)
    assert isinstance(forwarded, OrderCancelForwarded)
    assert (forwarded.request_id, forwarded.lines) == (request.request_id, request.lines)
    assert units(uow, "A", "wh") == (5, 2)


async def test_a_cancelled_reservation_goes_to_the_oldest_backorder() -> None:
    uow = await with_stock(("A", "wh", 2))
    [event] = allocated(await allocate(uow, validated(("A", 2))))
    oldest, younger = validated(("A", 2)), validated(("A", 1))
    await allocate(uow, oldest, younger)
    events = await release_cancelled(accepted(event), uow, RULES)
    assert [type(e) for e in events] == [OrderCancelled, OrderAllocated]
    assert [e.order_id for e in allocated(events)] == [oldest.order_id]
    assert status(uow, event.order_id) is AllocationStatus.CANCELLED
    assert status(uow, younger.order_id) is AllocationStatus.BACKORDERED
    assert units(uow, "A", "wh") == (2, 2)
    assert await release_cancelled(accepted(event), uow, RULES) == []


async def test_a_partial_cancel_releases_exactly_the_cancelled_lines() -> None:
    uow = await with_stock(("PA", "wh", 5), ("PB", "wh", 5))
    [event] = allocated(await allocate(uow, validated(("PA", 3), ("PB", 1))))
    [reduced] = await release_cancelled(accepted(event, [("PA", 2), ("PB", 1)]), uow, RULES)
    assert isinstance(reduced, OrderAllocated) and shipments(reduced) == [("wh", [("PA", 1)])]
    assert units(uow, "PA", "wh") == (5, 1) and units(uow, "PB", "wh") == (5, 0)
    assert status(uow, event.order_id) is AllocationStatus.ALLOCATED


async def test_releasing_what_an_order_holds_keeps_the_remainder_that_waits_for_stock() -> None:
    uow = await with_stock(
        ("X", "wh1", 1), ("Y", "wh2", 1), locations=[location("wh1", cost="1.00"), location("wh2")]
    )
    [event] = allocated(await allocate(uow, validated(("X", 1), ("Y", 1))))
    [waits] = await fail_shipment(failed(event, "wh2"), uow, RULES)
    assert isinstance(waits, OrderBackordered)
    [reduced] = await release_cancelled(accepted(event, [("X", 1)]), uow, RULES)
    assert isinstance(reduced, OrderAllocated) and reduced.shipments == []
    assert [(line.sku, line.quantity) for line in reduced.backordered_lines] == [("Y", 1)]
    assert status(uow, event.order_id) is AllocationStatus.BACKORDERED


# Wiring


def test_the_router_has_a_handler_for_every_type_allocation_receives() -> None:
    inputs = build_router(AllocationSettings()).bind()
    assert {i.name for i in inputs} == {
        "location_updated",
        "stock_adjusted",
        "order_facts",
        "erasure_requested",
    }


def test_validated_orders_share_transactions_locking_their_skus_and_other_facts_do_not() -> None:
    fact = validated(("B", 1), ("A", 2), ("B", 3))
    assert skus_to_lock(fact) == ["A", "B"]
    assert skus_to_lock(cancel(fact.order_id)) is None


def returned(
    order_id: UUID, restock: dict[str, int], write_off: dict[str, int], return_id: str
) -> ReturnArrived:
    return ReturnArrived(
        order_id=order_id,
        return_id=return_id,
        location_id="wh",
        restock=[ShipmentLine(sku=s, quantity=q) for s, q in restock.items()],
        write_off=[ShipmentLine(sku=s, quantity=q) for s, q in write_off.items()],
    )


async def test_resellable_returned_units_go_back_on_hand_once_and_wake_the_oldest_backorder() -> None:
    uow = await with_stock(("RET", "wh", 1))
    [first] = allocated(await allocate(uow, validated(("RET", 1))))
    await ship_shipment(shipped(first, "wh"), uow)
    waiting = validated(("RET", 1))
    await allocate(uow, waiting)
    assert status(uow, waiting.order_id) is AllocationStatus.BACKORDERED

    arrival_ = returned(first.order_id, {"RET": 1}, {"DMG": 2}, "rma-1")
    [woken] = allocated(await restock_return(arrival_, uow, RULES))
    assert woken.order_id == waiting.order_id
    assert units(uow, "RET", "wh") == (1, 1)
    assert await restock_return(arrival_, uow, RULES) == []
    assert units(uow, "RET", "wh") == (1, 1)
    assert units(uow, "DMG", "wh") == (0, 0)  # damaged units left with the parcel and stay written off


def erasure(customer: str, request_id: str = "er-1") -> ErasureRequested:
    return ErasureRequested.model_validate(erasure_request(customer, request_id=request_id))


async def test_an_erasure_erases_the_kept_details_of_the_customers_orders_and_leaves_stock_alone() -> None:
    uow = await with_stock(("A", "wh", 1))
    mine, waiting, other = (
        validated(("A", 1), customer="c1"),
        validated(("A", 1), customer="c1"),
        validated(("A", 1)),
    )
    await allocate(uow, mine, waiting)
    await allocate(uow, other)

    [report] = await erase_customer(erasure("c1"), uow)

    assert isinstance(report, ErasureApplied)
    assert (report.service, report.orders, report.rows_changed) == ("allocation", 2, 2)
    for fact in (mine, waiting):
        kept = uow.state.orders[fact.order_id].order
        assert kept is not None and (kept.customer.email, kept.shipping_address.city) == (
            ERASED_EMAIL,
            ERASED,
        )
        assert kept.shipping_address.country == fact.order.shipping_address.country
    assert uow.state.orders[other.order_id].order == other.order
    assert (status(uow, mine.order_id), status(uow, waiting.order_id)) == (
        AllocationStatus.ALLOCATED,
        AllocationStatus.BACKORDERED,
    )
    assert units(uow, "A", "wh") == (1, 1)
    assert await erase_customer(erasure("c1"), uow) == []


async def test_an_erased_backorder_is_allocated_later_and_passed_on_erased() -> None:
    uow = await with_stock(("A", "wh", 0))
    waiting = validated(("A", 1), customer="c1")
    await allocate(uow, waiting)
    await erase_customer(erasure("c1"), uow)

    [woken] = allocated(await adjust_stock(arrival("A", "wh", 1), uow, RULES))

    assert woken.order_id == waiting.order_id and woken.order.customer.name == ERASED


async def test_an_order_placed_before_an_erasure_that_arrives_after_it_is_allocated_and_passed_on_erased() -> (
    None
):
    uow = await with_stock(("A", "wh", 2))
    await erase_customer(erasure("c1"), uow)
    late = validated(("A", 1), customer="c1")

    [event] = await allocate(uow, late)

    assert isinstance(event, OrderAllocated) and shipments(event) == [("wh", [("A", 1)])]
    assert event.order.customer.id == ERASED and event.order.shipping_address.lat is None
    kept = uow.state.orders[late.order_id].order
    assert kept is not None and kept.shipping_address.line1 == ERASED
