"""Intake's use cases on in-memory ports: what each input causes, without Kafka or PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from libs.contracts.envelope import Event
from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderBackordered,
    OrderCancelled,
    OrderCancelRefused,
    OrderCancelRequested,
    OrderEditRefused,
    OrderEditRequested,
    OrderFulfillmentProgressed,
    OrderHeld,
    OrderReceived,
    OrderRejected,
    OrderValidated,
)
from libs.contracts.orders import (
    CancellationOutcome,
    CancelRequested,
    EditOutcome,
    EditRequested,
    OrderDetails,
    OrderRefused,
    OrderStatusChanged,
    OrderSubmitted,
    Reason,
    Shipment,
    ShipmentLine,
)
from libs.contracts.privacy import ERASED, ERASED_EMAIL, ErasureApplied, ErasureRequested
from libs.contracts.returns import OrderReturned
from libs.contracts.topics import (
    ORDERS_CANCELLATIONS,
    ORDERS_REFUSED,
    ORDERS_STATUS,
    PRIVACY_ERASURES,
    facts_topic,
)
from libs.contracts.vocabulary import OrderStatus
from libs.platform import metrics
from libs.platform.messaging import Rejected
from services.intake.app.use_cases import (
    StatusFact,
    details_of,
    erase_customer,
    publish_statuses,
    record_submissions,
    request_cancel,
    request_edit,
)
from services.intake.domain.orders import fingerprint, order_id_for
from services.intake.entry import build_router
from services.intake.settings import IntakeSettings
from tests.support.orders import erasure_request, order
from tests.unit.fakes.intake import FakeIntakeUnit

pytestmark = pytest.mark.unit


PLACED = order(customer_id="c1")
"""One channel order's content: submitting it again under the same external id is a retry."""


def submitted(external_id: str = "ext-1", **changes: Any) -> OrderSubmitted:
    return OrderSubmitted.model_validate(PLACED | {"external_id": external_id} | changes)


def applied(results: Sequence[Sequence[Event] | Rejected]) -> list[Sequence[Event]]:
    """The events of each item, asserting that none was rejected."""
    assert not any(isinstance(r, Rejected) for r in results), results
    return [r for r in results if not isinstance(r, Rejected)]


def shipment(sku: str = "MUG", quantity: int = 1, location: str = "wh-1") -> Shipment:
    return Shipment(
        shipment_id=f"{location}:{sku}",
        location_id=location,
        lines=[ShipmentLine(sku=sku, quantity=quantity)],
    )


def allocated(order_id: UUID, *shipments: Shipment, **fields: Any) -> OrderAllocated:
    details = OrderDetails.model_validate(order("ext-1"))
    return OrderAllocated(
        order_id=order_id, shipments=list(shipments or [shipment()]), order=details, **fields
    )


def returned(order_id: UUID) -> OrderReturned:
    return OrderReturned(
        order_id=order_id,
        status="partially_returned",
        return_id="rma-1",
        lines=[ShipmentLine(sku="MUG", quantity=1)],
    )


def progressed(order_id: UUID, status: str) -> OrderFulfillmentProgressed:
    return OrderFulfillmentProgressed(order_id=order_id, status=status, shipments=[shipment()])  # type: ignore[arg-type]


async def received_order(uow: FakeIntakeUnit, external_id: str = "ext-1") -> UUID:
    applied(await record_submissions([submitted(external_id)], uow))
    return order_id_for("webshop", external_id)


async def order_at(uow: FakeIntakeUnit, status: OrderStatus, external_id: str = "ext-1") -> UUID:
    """Given: an order that stands at ``status`` (its earlier versions do not matter here)."""
    order_id = await received_order(uow, external_id)
    uow.known[order_id] = dataclasses.replace(uow.known[order_id], status=status)
    return order_id


def status_count(status: str) -> float:
    return metrics.REGISTRY.get_sample_value("baton_order_status_total", {"status": status}) or 0.0


# Submissions


async def test_a_new_channel_order_is_received_as_version_1_and_goes_on_to_validation() -> None:
    uow = FakeIntakeUnit()
    before = status_count("received")
    [[status, received]] = applied(await record_submissions([submitted()], uow))
    order_id = order_id_for("webshop", "ext-1")
    assert isinstance(status, OrderStatusChanged)
    assert (status.order_id, status.status, status.version) == (order_id, OrderStatus.RECEIVED, 1)
    assert (status.channel, status.external_id) == ("webshop", "ext-1")
    assert isinstance(received, OrderReceived) and received.order_id == order_id
    assert received.order == OrderDetails.model_validate(PLACED | {"external_id": "ext-1"})
    assert uow.timeline[order_id] == [status]
    assert status_count("received") == before + 1


async def test_a_channel_retry_changes_nothing() -> None:
    uow = FakeIntakeUnit()
    order_id = await received_order(uow)
    before = status_count("received")
    assert await record_submissions([submitted()], uow) == [[]]
    assert uow.statuses(order_id) == ["received"]
    assert status_count("received") == before


async def test_the_same_channel_order_with_different_content_is_refused_and_the_first_one_stands() -> None:
    uow = FakeIntakeUnit()
    order_id = await received_order(uow)
    [[refusal]] = applied(await record_submissions([submitted(currency="USD")], uow))
    assert isinstance(refusal, OrderRefused)
    assert (refusal.channel, refusal.external_id, refusal.existing_order_id) == ("webshop", "ext-1", order_id)
    assert [r.code for r in refusal.reasons] == ["duplicate_external_id_conflict"]
    assert uow.details[order_id].currency == "EUR"
    assert uow.statuses(order_id) == ["received"]


async def test_a_channel_order_twice_in_one_batch_is_one_order_and_the_second_a_retry_or_a_conflict() -> None:
    uow = FakeIntakeUnit()
    results = applied(
        await record_submissions([submitted(), submitted(), submitted(currency="USD"), submitted()], uow)
    )
    assert [[type(e) for e in r] for r in results] == [
        [OrderStatusChanged, OrderReceived],
        [],
        [OrderRefused],
        [],
    ]
    assert uow.statuses(order_id_for("webshop", "ext-1")) == ["received"]


async def test_a_batch_conflicting_with_an_order_on_file_is_judged_against_the_one_on_file() -> None:
    uow = FakeIntakeUnit()
    await received_order(uow)
    results = applied(await record_submissions([submitted(currency="USD"), submitted()], uow))
    assert [[type(e) for e in r] for r in results] == [[OrderRefused], []]


async def test_a_batch_of_new_orders_is_recorded_in_one_call_and_its_events_keep_the_batch_order() -> None:
    uow = FakeIntakeUnit()
    batch = [submitted("a"), submitted("b"), submitted("c")]
    results = applied(await record_submissions(batch, uow))
    assert uow.calls == ["add"]
    assert [[(type(e).__name__, e.partition_key()) for e in r] for r in results] == [
        [("OrderStatusChanged", str(i)), ("OrderReceived", str(i))]
        for i in (order_id_for("webshop", x) for x in "abc")
    ]


async def test_the_envelope_a_channel_may_add_is_not_part_of_the_order() -> None:
    bare = submitted()
    wrapped = submitted(event_id=str(uuid4()), schema_version=1)
    assert details_of(bare) == details_of(wrapped)
    assert fingerprint(details_of(wrapped).model_dump(mode="json")) == fingerprint(
        OrderDetails.model_validate(wrapped.model_dump(include=set(OrderDetails.model_fields))).model_dump(
            mode="json"
        )
    )
    uow = FakeIntakeUnit()
    await record_submissions([bare], uow)
    assert await record_submissions([wrapped], uow) == [[]]


# Status facts


async def test_each_fact_moves_the_order_on_with_the_next_version() -> None:
    uow = FakeIntakeUnit()
    order_id = await received_order(uow)
    for fact in (
        OrderValidated(order_id=order_id, order=OrderDetails.model_validate(order("ext-1"))),
        allocated(order_id),
        progressed(order_id, "in_fulfillment"),
        progressed(order_id, "shipped"),
        progressed(order_id, "delivered"),
    ):
        [[change]] = applied(await publish_statuses([fact], uow))
        assert isinstance(change, OrderStatusChanged) and change.occurred_at == fact.occurred_at
    assert uow.statuses(order_id) == [
        "received",
        "validated",
        "allocated",
        "in_fulfillment",
        "shipped",
        "delivered",
    ]
    assert [e.version for e in uow.timeline[order_id]] == [1, 2, 3, 4, 5, 6]


async def test_a_move_the_state_machine_refuses_changes_nothing_and_uses_no_version() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.DELIVERED)
    assert await publish_statuses([allocated(order_id)], uow) == [[]]
    assert uow.known[order_id].version == 1
    [[change]] = applied(await publish_statuses([returned(order_id)], uow))
    assert isinstance(change, OrderStatusChanged) and change.version == 2


async def test_a_shipped_order_whose_lost_parcel_is_sourced_again_is_shipped_again_with_the_new_shipments() -> (
    None
):
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.SHIPPED)
    [[change]] = applied(await publish_statuses([allocated(order_id)], uow))
    assert isinstance(change, OrderStatusChanged)
    assert (change.status, change.version) == (OrderStatus.SHIPPED, 2)
    assert [s.shipment_id for s in change.shipments] == ["wh-1:MUG"]


async def test_facts_about_one_order_in_one_batch_apply_in_order_in_one_lock_and_one_write() -> None:
    uow = FakeIntakeUnit()
    order_id = await received_order(uow)
    uow.calls.clear()
    details = OrderDetails.model_validate(order("ext-1"))
    results = applied(
        await publish_statuses(
            [OrderValidated(order_id=order_id, order=details), allocated(order_id), allocated(order_id)], uow
        )
    )
    assert [(e.status, e.version) for r in results for e in r if isinstance(e, OrderStatusChanged)] == [
        (OrderStatus.VALIDATED, 2),
        (OrderStatus.ALLOCATED, 3),
        (OrderStatus.ALLOCATED, 4),
    ]
    assert uow.calls == ["lock", "record_statuses"]


async def test_a_fact_about_an_order_never_received_is_rejected_and_the_others_apply() -> None:
    uow = FakeIntakeUnit()
    order_id = await received_order(uow)
    stranger = uuid4()
    details = OrderDetails.model_validate(order("ext-1"))
    unknown, known = await publish_statuses(
        [
            OrderRejected(order_id=stranger, reasons=[Reason(code="fraud", message="flagged")]),
            OrderValidated(order_id=order_id, order=details),
        ],
        uow,
    )
    assert isinstance(unknown, Rejected) and unknown.cause == "unknown_order"
    assert str(stranger) in unknown.detail
    assert not isinstance(known, Rejected) and [type(e) for e in known] == [OrderStatusChanged]


async def test_rejections_holds_and_backorders_tell_the_customer_why() -> None:
    uow = FakeIntakeUnit()
    held, rejected, backordered = [await received_order(uow, x) for x in ("h", "r", "b")]
    uow.known[backordered] = dataclasses.replace(uow.known[backordered], status=OrderStatus.VALIDATED)
    why = [Reason(code="first_order_over_threshold", message="large first order")]
    results = applied(
        await publish_statuses(
            [
                OrderHeld(order_id=held, reasons=why),
                OrderRejected(order_id=rejected, reasons=why),
                OrderBackordered(order_id=backordered, reasons=why),
            ],
            uow,
        )
    )
    changes = [e for r in results for e in r if isinstance(e, OrderStatusChanged)]
    assert [(e.status, e.reasons) for e in changes] == [
        (OrderStatus.ON_HOLD, why),
        (OrderStatus.REJECTED, why),
        (OrderStatus.BACKORDERED, why),
    ]


async def test_an_allocation_leaving_lines_waiting_for_stock_is_a_backorder_with_a_reason_per_line() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.IN_FULFILLMENT)
    fact = allocated(order_id, shipment("MUG"), backordered_lines=[ShipmentLine(sku="CUP", quantity=2)])
    [[change]] = applied(await publish_statuses([fact], uow))
    assert isinstance(change, OrderStatusChanged) and change.status is OrderStatus.BACKORDERED
    assert [(r.code, r.sku, r.message) for r in change.reasons] == [
        ("insufficient_stock", "CUP", "2 waiting for stock")
    ]
    assert change.shipments == [shipment("MUG")]


@pytest.mark.parametrize("fact", ["allocated", "backordered", "in_fulfillment"])
async def test_once_part_has_shipped_sourcing_again_or_waiting_keeps_the_order_partially_shipped(
    fact: str,
) -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.PARTIALLY_SHIPPED)
    causes: dict[str, StatusFact] = {
        "allocated": allocated(order_id, shipment(location="wh-3")),
        "backordered": allocated(order_id, backordered_lines=[ShipmentLine(sku="MUG", quantity=1)]),
        "in_fulfillment": progressed(order_id, "in_fulfillment"),
    }
    [[change]] = applied(await publish_statuses([causes[fact]], uow))
    assert isinstance(change, OrderStatusChanged)
    assert (change.status, change.version) == (OrderStatus.PARTIALLY_SHIPPED, 2)
    [[shipped]] = applied(await publish_statuses([progressed(order_id, "shipped")], uow))
    assert isinstance(shipped, OrderStatusChanged) and shipped.status is OrderStatus.SHIPPED


async def test_allocation_s_fact_before_validation_s_publishes_validated_then_allocated() -> None:
    """Found by the chaos run (a broker and a database restart): intake's group for allocation's
    facts resumed before the one for validation's, `allocated` came first and was dropped, and the
    order stood `validated` for good while it was shipped and delivered."""
    uow = FakeIntakeUnit()
    order_id = await received_order(uow)
    [events] = applied(await publish_statuses([allocated(order_id, shipment())], uow))
    changes = [e for e in events if isinstance(e, OrderStatusChanged)]
    assert [(c.status, c.version) for c in changes] == [
        (OrderStatus.VALIDATED, 2),
        (OrderStatus.ALLOCATED, 3),
    ]
    assert changes[1].shipments == [shipment()]
    [late] = applied(
        await publish_statuses(
            [OrderValidated(order_id=order_id, order=OrderDetails.model_validate(order("ext-1")))], uow
        )
    )
    assert late == [], "the late fact is stale: refused, no version used"


async def test_fulfillment_s_fact_before_allocation_s_publishes_allocated_with_its_shipments_first() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.VALIDATED)
    [events] = applied(await publish_statuses([progressed(order_id, "in_fulfillment")], uow))
    changes = [e for e in events if isinstance(e, OrderStatusChanged)]
    assert [c.status for c in changes] == [OrderStatus.ALLOCATED, OrderStatus.IN_FULFILLMENT]
    assert changes[0].shipments == changes[1].shipments == [shipment()]


async def test_a_parcel_leaving_while_the_rest_waits_says_so_in_the_status() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.BACKORDERED)
    left = progressed(order_id, "partially_shipped").model_copy(update={"awaiting_stock": True})
    [[change]] = applied(await publish_statuses([left], uow))
    assert isinstance(change, OrderStatusChanged)
    assert change.status is OrderStatus.PARTIALLY_SHIPPED
    assert [r.code for r in change.reasons] == ["awaiting_stock"]
    [[alone]] = applied(await publish_statuses([progressed(order_id, "partially_shipped")], uow))
    assert isinstance(alone, OrderStatusChanged) and alone.reasons == []


async def test_a_parcel_leaving_while_the_rest_is_backordered_and_sourced_again_ends_delivered() -> None:
    """Found by the chaos run: the order stood `backordered` (a failed parcel's line waited for
    stock) when the other parcel left; every later fact must still move it on to `delivered`."""
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.IN_FULFILLMENT)
    sequence: list[StatusFact] = [
        OrderBackordered(order_id=order_id, reasons=[Reason(code="insufficient_stock", message="-")]),
        progressed(order_id, "partially_shipped"),  # the other parcel left
        allocated(order_id, shipment(location="wh-2"), backordered_lines=[]),  # stock for the rest
        progressed(order_id, "partially_shipped"),
        progressed(order_id, "delivered"),  # the last update skipped `shipped`
    ]
    seen = []
    for fact in sequence:
        seen += [
            e.status
            for events in applied(await publish_statuses([fact], uow))
            for e in events
            if isinstance(e, OrderStatusChanged)
        ]
    assert seen[0] is OrderStatus.BACKORDERED and seen[-1] is OrderStatus.DELIVERED
    assert OrderStatus.PARTIALLY_SHIPPED in seen
    assert uow.known[order_id].status is OrderStatus.DELIVERED


async def test_the_expected_delivery_travels_with_the_status() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.ALLOCATED)
    eta = datetime(2026, 12, 1, 18, tzinfo=UTC)
    fact = progressed(order_id, "in_fulfillment").model_copy(update={"eta": eta})
    [[change]] = applied(await publish_statuses([fact], uow))
    assert isinstance(change, OrderStatusChanged) and change.eta == eta


async def test_an_order_cancelled_whole_accepts_the_cancel_request() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.ALLOCATED)
    [[change, outcome]] = applied(
        await publish_statuses([OrderCancelled(order_id=order_id, request_id="cx-1")], uow)
    )
    assert isinstance(change, OrderStatusChanged) and change.status is OrderStatus.CANCELLED
    assert isinstance(outcome, CancellationOutcome)
    assert (outcome.request_id, outcome.order_id, outcome.outcome) == ("cx-1", order_id, "accepted")


async def test_a_reduced_allocation_carrying_a_cancel_request_accepts_it() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.IN_FULFILLMENT)
    [[change, outcome]] = applied(
        await publish_statuses([allocated(order_id, cancel_request_id="px-1")], uow)
    )
    assert isinstance(change, OrderStatusChanged) and change.status is OrderStatus.ALLOCATED
    assert isinstance(outcome, CancellationOutcome) and (outcome.request_id, outcome.outcome) == (
        "px-1",
        "accepted",
    )


async def test_a_cancel_is_accepted_even_when_the_status_cannot_move() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.PARTIALLY_SHIPPED)
    [[outcome]] = applied(await publish_statuses([OrderCancelled(order_id=order_id, request_id="cx-1")], uow))
    assert isinstance(outcome, CancellationOutcome) and outcome.outcome == "accepted"
    assert uow.known[order_id].status is OrderStatus.PARTIALLY_SHIPPED


async def test_a_cancel_refused_downstream_is_told_to_the_channel_without_reading_the_order() -> None:
    uow = FakeIntakeUnit()
    order_id = uuid4()
    why = [Reason(code="already_shipped", message="the parcel has left")]
    [[outcome]] = applied(
        await publish_statuses([OrderCancelRefused(order_id=order_id, request_id="cx-1", reasons=why)], uow)
    )
    assert isinstance(outcome, CancellationOutcome)
    assert (outcome.order_id, outcome.outcome, outcome.reasons) == (order_id, "refused", why)
    assert uow.calls == []


async def test_every_status_published_is_counted() -> None:
    uow = FakeIntakeUnit()
    order_id = await received_order(uow)
    before = status_count("validated")
    details = OrderDetails.model_validate(order("ext-1"))
    await publish_statuses([OrderValidated(order_id=order_id, order=details)], uow)
    assert status_count("validated") == before + 1


# Cancel requests


async def test_a_cancel_request_for_a_live_order_is_forwarded_once() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.ALLOCATED)
    lines = [ShipmentLine(sku="MUG", quantity=1)]
    request = CancelRequested(request_id="cx-1", order_id=order_id, lines=lines, reason="changed my mind")
    [fact] = await request_cancel(request, uow)
    assert isinstance(fact, OrderCancelRequested)
    assert (fact.order_id, fact.request_id, fact.lines, fact.reason) == (
        order_id,
        "cx-1",
        lines,
        "changed my mind",
    )
    assert await request_cancel(request, uow) == []


async def test_a_cancel_request_may_name_the_order_by_channel_and_external_id() -> None:
    uow = FakeIntakeUnit()
    order_id = await received_order(uow)
    [fact] = await request_cancel(
        CancelRequested(request_id="cx-1", channel="webshop", external_id="ext-1"), uow
    )
    assert isinstance(fact, OrderCancelRequested) and fact.order_id == order_id


async def test_a_cancel_request_naming_another_channel_is_refused_as_if_the_order_did_not_exist() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.ALLOCATED)
    other = CancelRequested(request_id="cx-1", order_id=order_id, channel="marketplace")
    [refusal] = await request_cancel(other, uow)
    assert isinstance(refusal, CancellationOutcome)
    assert (refusal.outcome, [r.code for r in refusal.reasons]) == ("refused", ["unknown_order"])
    own = CancelRequested(request_id="cx-1", order_id=order_id, channel="webshop")
    [fact] = await request_cancel(own, uow)
    assert isinstance(fact, OrderCancelRequested) and fact.order_id == order_id


async def test_a_cancel_request_for_an_order_not_known_yet_is_refused_and_not_recorded() -> None:
    uow = FakeIntakeUnit()
    early = CancelRequested(request_id="early", channel="webshop", external_id="ext-1")
    [refusal] = await request_cancel(early, uow)
    assert isinstance(refusal, CancellationOutcome)
    assert (refusal.order_id, refusal.outcome, [r.code for r in refusal.reasons]) == (
        None,
        "refused",
        ["unknown_order"],
    )
    await received_order(uow)
    [fact] = await request_cancel(early, uow)
    assert isinstance(fact, OrderCancelRequested)


async def test_a_cancel_request_naming_an_unknown_order_id_is_refused_with_that_id() -> None:
    stranger = uuid4()
    [refusal] = await request_cancel(CancelRequested(request_id="cx", order_id=stranger), FakeIntakeUnit())
    assert isinstance(refusal, CancellationOutcome) and refusal.order_id == stranger
    assert [r.code for r in refusal.reasons] == ["unknown_order"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (OrderStatus.SHIPPED, "already_shipped"),
        (OrderStatus.DELIVERED, "already_shipped"),
        (OrderStatus.REJECTED, "already_final"),
        (OrderStatus.CANCELLED, "already_final"),
    ],
)
async def test_cancelling_too_late_is_refused_once(status: OrderStatus, code: str) -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, status)
    request = CancelRequested(request_id="late", order_id=order_id)
    [refusal] = await request_cancel(request, uow)
    assert isinstance(refusal, CancellationOutcome)
    assert (refusal.order_id, refusal.outcome) == (order_id, "refused")
    assert [(r.code, r.message) for r in refusal.reasons] == [(code, f"the order is {status.value}")]
    assert await request_cancel(request, uow) == []


async def test_the_remainder_of_a_partially_shipped_order_may_still_be_cancelled() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.PARTIALLY_SHIPPED)
    [fact] = await request_cancel(CancelRequested(request_id="rest", order_id=order_id), uow)
    assert isinstance(fact, OrderCancelRequested)


async def test_a_cancel_request_naming_no_order_is_rejected() -> None:
    with pytest.raises(Rejected) as rejected:
        await request_cancel(CancelRequested(request_id="cx", channel="webshop"), FakeIntakeUnit())
    assert rejected.value.cause == "schema_violation"


# Router


def test_the_router_handles_every_type_intake_receives() -> None:
    bound = build_router(IntakeSettings()).bind()
    assert {b.name for b in bound} == {
        "order_submitted",
        "cancel_requested",
        "edit_requested",
        "payment_updated",
        "order_facts",
        "erasure_requested",
    }


async def test_every_event_intake_returns_goes_where_the_topology_says() -> None:
    uow = FakeIntakeUnit()
    [facts] = [b for b in build_router(IntakeSettings()).bind() if b.name == "order_facts"]
    [[status, received]] = applied(await record_submissions([submitted()], uow))
    [[refusal]] = applied(await record_submissions([submitted(currency="USD")], uow))
    [[outcome]] = applied(
        await publish_statuses([OrderCancelRefused(order_id=uuid4(), request_id="x", reasons=[])], uow)
    )
    assert isinstance(status, OrderStatusChanged)
    [forwarded] = await request_cancel(CancelRequested(request_id="y", order_id=status.order_id), uow)
    routed = {(o.topic, o.key) for o in facts.route([status, received, refusal, outcome, forwarded])}
    order_id = str(order_id_for("webshop", "ext-1"))
    assert routed == {
        (ORDERS_STATUS, order_id),
        (facts_topic("validation"), order_id),
        (facts_topic("notification"), order_id),
        (ORDERS_REFUSED, "webshop:ext-1"),
        (ORDERS_CANCELLATIONS, outcome.partition_key()),
        (facts_topic("allocation"), order_id),
    }


# Edits


async def test_an_edit_of_an_allocated_order_goes_to_validation_once_with_the_order_as_edited() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.ALLOCATED)
    address = uow.details[order_id].shipping_address.model_copy(update={"line1": "Neue Strasse 2"})
    request = EditRequested(request_id="ed-1", order_id=order_id, channel="webshop", shipping_address=address)
    [fact] = await request_edit(request, uow)
    assert isinstance(fact, OrderEditRequested) and fact.order.shipping_address.line1 == "Neue Strasse 2"
    assert fact.order.lines == uow.details[order_id].lines
    assert [(x.sku, x.quantity) for x in fact.previous_lines or []] == [
        (x.sku, x.quantity) for x in uow.details[order_id].lines
    ], "what it had before, for per-day limits"
    assert await request_edit(request, uow) == []


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (OrderStatus.RECEIVED, "not_editable"),
        (OrderStatus.BACKORDERED, "not_editable"),
        (OrderStatus.PARTIALLY_SHIPPED, "already_shipped"),
        (OrderStatus.SHIPPED, "already_shipped"),
        (OrderStatus.CANCELLED, "already_final"),
    ],
)
async def test_an_edit_where_edits_do_not_apply_is_refused(status: OrderStatus, code: str) -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, status)
    lines = uow.details[order_id].lines
    [outcome] = await request_edit(EditRequested(request_id="ed-1", order_id=order_id, lines=lines), uow)
    assert isinstance(outcome, EditOutcome)
    assert (outcome.outcome, [r.code for r in outcome.reasons]) == ("refused", [code])


async def test_an_edit_carried_out_is_a_new_version_with_the_edited_details_and_an_accepted_outcome() -> None:
    uow = FakeIntakeUnit()
    order_id = await order_at(uow, OrderStatus.IN_FULFILLMENT)
    new = uow.details[order_id].model_copy(update={"shipping_method": "express"})
    fact = OrderAllocated(order_id=order_id, shipments=[shipment()], order=new, edit_request_id="ed-1")
    [[status, outcome]] = applied(await publish_statuses([fact], uow))
    assert isinstance(status, OrderStatusChanged) and status.status == OrderStatus.ALLOCATED
    assert status.order == new
    assert isinstance(outcome, EditOutcome) and (outcome.outcome, outcome.order) == ("accepted", new)
    assert uow.details[order_id] == new
    refused = OrderEditRefused(order_id=order_id, request_id="ed-2", reasons=[Reason(code="x", message="y")])
    [[told]] = applied(await publish_statuses([refused], uow))
    assert isinstance(told, EditOutcome) and told.outcome == "refused"


def erasure(customer: str = "c1", **fields: Any) -> ErasureRequested:
    return ErasureRequested.model_validate(erasure_request(customer, **fields))


def customer(customer_id: str) -> dict[str, str]:
    return {"id": customer_id, "email": f"{customer_id}@example.com", "name": f"Name of {customer_id}"}


async def test_an_erasure_erases_the_details_of_the_customers_orders_and_keeps_what_operations_need() -> None:
    uow = FakeIntakeUnit()
    await record_submissions([submitted("ext-1"), submitted("ext-2", customer=customer("c2"))], uow)
    before = uow.details[order_id_for("webshop", "ext-1")]

    [report] = await erase_customer(erasure("c1", request_id="er-1"), uow)

    assert isinstance(report, ErasureApplied)
    assert (report.request_id, report.service, report.orders, report.rows_changed) == ("er-1", "intake", 1, 1)
    erased = uow.details[order_id_for("webshop", "ext-1")]
    assert (erased.customer.id, erased.customer.email, erased.customer.name) == (ERASED, ERASED_EMAIL, ERASED)
    address = erased.shipping_address
    assert (address.name, address.line1, address.city, address.postal_code) == (ERASED,) * 4
    assert (address.line2, address.lat, address.lon) == (None, None, None)
    assert address.country == before.shipping_address.country
    assert (erased.external_id, erased.lines, erased.payment, erased.placed_at) == (
        before.external_id,
        before.lines,
        before.payment,
        before.placed_at,
    )
    assert uow.details[order_id_for("webshop", "ext-2")].customer.email == "c2@example.com"
    assert uow.statuses(order_id_for("webshop", "ext-1")) == ["received"]


async def test_a_repeated_erasure_request_changes_nothing_and_is_reported_once() -> None:
    uow = FakeIntakeUnit()
    await record_submissions([submitted("ext-1")], uow)
    [_] = await erase_customer(erasure(request_id="er-1"), uow)
    await record_submissions([submitted("ext-9", placed_at="2026-11-29T00:00:00Z")], uow)

    assert await erase_customer(erasure(request_id="er-1"), uow) == []
    assert uow.details[order_id_for("webshop", "ext-9")].customer.id == "c1"


async def test_an_erasure_keeps_orders_placed_after_it_and_other_channels_customers_unless_it_names_no_channel() -> (
    None
):
    uow = FakeIntakeUnit()
    later = submitted("ext-later", placed_at="2026-11-28T00:00:01Z")
    marketplace = submitted("ext-m", channel="marketplace")
    await record_submissions([submitted("ext-1"), later, marketplace], uow)

    [report] = await erase_customer(erasure(request_id="er-web"), uow)
    assert isinstance(report, ErasureApplied) and report.orders == 1
    assert uow.details[order_id_for("webshop", "ext-later")].customer.id == "c1"
    assert uow.details[order_id_for("marketplace", "ext-m")].customer.id == "c1"

    [report] = await erase_customer(erasure(channel=None, request_id="er-all"), uow)
    assert isinstance(report, ErasureApplied) and report.orders == 1
    assert uow.details[order_id_for("marketplace", "ext-m")].customer.id == ERASED
    assert uow.details[order_id_for("webshop", "ext-later")].customer.id == "c1"


async def test_an_order_placed_before_an_erasure_that_arrives_after_it_is_recorded_and_passed_on_erased() -> (
    None
):
    uow = FakeIntakeUnit()
    [_] = await erase_customer(erasure(request_id="er-1"), uow)

    [[status, received]] = applied(await record_submissions([submitted("ext-late")], uow))
    [[_, kept]] = applied(
        await record_submissions([submitted("ext-new", placed_at="2026-11-28T08:00:00Z")], uow)
    )

    assert isinstance(received, OrderReceived) and isinstance(status, OrderStatusChanged)
    assert received.order.customer.email == ERASED_EMAIL
    assert uow.details[received.order_id].shipping_address.line1 == ERASED
    assert isinstance(kept, OrderReceived) and kept.order.customer.email != ERASED_EMAIL
    assert applied(await record_submissions([submitted("ext-late")], uow)) == [[]], "a retry, still"


async def test_an_erasure_report_goes_to_the_outcome_topic_keyed_by_its_request() -> None:
    [requests] = [b for b in build_router(IntakeSettings()).bind() if b.name == "erasure_requested"]
    [report] = await erase_customer(erasure(request_id="er-7"), FakeIntakeUnit())

    assert [(o.topic, o.key) for o in requests.route([report])] == [(PRIVACY_ERASURES, "er-7")]
