"""Fulfillment's use cases: shipments into pipelines, stage updates, cancellation checks, order progress.

Each takes contract objects, the pipelines config and a unit of work and returns the events it
caused; it never sees a topic, a header or a database connection. The rules are in ``domain``; a
use case reads what a batch needs at once, applies the rules in order in memory, and writes once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal
from uuid import UUID

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
    ShipmentLost,
    ShipmentShipped,
)
from libs.contracts.orders import Reason, ShipmentLine
from libs.contracts.orders import Shipment as PublicShipment
from libs.contracts.refunds import RefundLine, RefundRequested
from libs.contracts.sla import SlaBreached
from libs.platform import metrics
from libs.platform.records import Rejected
from libs.platform.timers import Timer
from services.fulfillment.app.config import load_pipelines
from services.fulfillment.app.ports import FulfillmentUnit
from services.fulfillment.app.returns import terms_of
from services.fulfillment.domain.pipelines import (
    FAILED,
    NOT_COLLECTED,
    READY_FOR_PICKUP,
    MoveKind,
    PipelineConfig,
    Progress,
    Refusal,
)
from services.fulfillment.domain.returns import Terms
from services.fulfillment.domain.shipments import (
    Lines,
    Location,
    Lost,
    Order,
    Parcel,
    Shipment,
    StageReport,
    announce,
    by_shipment_id,
    coarse,
    expected_delivery,
    not_collected,
    plan_cancel,
    receive_allocation,
    report_exception,
    report_stage,
    visible,
)
from services.fulfillment.domain.sla import (
    SHIP_BY,
    STAGE_SLA,
    Deadline,
    deadline,
    is_late,
    missed_ship_by,
    ship_by,
)

__all__ = [
    "apply_updates",
    "decide_cancel",
    "decide_edit",
    "load_pipelines",  # `baton pipelines` and the packaging test read the config through here
    "receive_allocations",
    "ship_by_missed",
    "stage_late",
    "update_location",
]

log = logging.getLogger("baton.fulfillment")


def contract_lines(lines: Lines) -> list[ShipmentLine]:
    """A shipment's {sku: units} as contract lines, sku order, empty lines left out."""
    return [ShipmentLine(sku=sku, quantity=units) for sku, units in sorted(lines.items()) if units > 0]


def public(s: Shipment) -> PublicShipment:
    return PublicShipment(
        shipment_id=s.shipment_id,
        location_id=s.location_id,
        lines=contract_lines(s.lines),
        pipeline=s.pipeline,
        stage=s.stage,
        carrier=s.carrier,
        tracking_number=s.tracking_number,
    )


def stage_changed(
    s: Shipment,
    left: str | None,
    entered: str | None,
    change: Literal["entered", "moved", "left"],
    reason: str | None = None,
) -> StageChanged:
    metrics.count(metrics.STAGE_CHANGES, s.pipeline, entered or left or "", change)
    return StageChanged(
        order_id=s.order_id,
        shipment_id=s.shipment_id,
        pipeline=s.pipeline,
        left_stage=left,
        entered_stage=entered,
        change=change,
        reason=reason,
    )


def progressed(
    order: Order,
    status: Progress,
    shipments: Sequence[Shipment],
    locations: Mapping[str, Location],
    config: PipelineConfig,
) -> OrderFulfillmentProgressed:
    return OrderFulfillmentProgressed(
        order_id=order.order_id,
        status=status,
        shipments=[public(s) for s in visible(shipments, config)],
        eta=expected_delivery(order, shipments, locations, config),
        awaiting_stock=order.awaiting_resource,
    )


def order_of(fact: OrderAllocated) -> Order:
    address = fact.order.shipping_address
    return Order(
        fact.order_id,
        fact.order.channel,
        fact.order.shipping_method,
        coarse(address.lat),
        coarse(address.lon),
    )


def parcels_of(fact: OrderAllocated) -> list[Parcel]:
    return [
        Parcel(s.shipment_id, s.location_id, {line.sku: line.quantity for line in s.lines})
        for s in fact.shipments
    ]


def report_of(update: FulfillmentUpdate) -> StageReport:
    return StageReport(
        update.shipment_id,
        update.stage,
        update.occurred_at,
        update.carrier,
        update.tracking_number,
        update.note,
        update.eta,
    )


def by_order(shipments: Iterable[Shipment]) -> dict[UUID, dict[str, Shipment]]:
    grouped: dict[UUID, dict[str, Shipment]] = {}
    for s in shipments:
        grouped.setdefault(s.order_id, {})[s.shipment_id] = s
    return grouped


async def schedule_deadlines(
    shipments: Iterable[Shipment], uow: FulfillmentUnit, config: PipelineConfig
) -> None:
    """Each shipment that entered a stage with an SLA gets its deadline (replacing the one of its
    previous stage); one whose stage has none keeps the old timer, which finds it moved on."""
    for s in shipments:
        if (due := deadline(s, config)) is not None:
            await uow.timers.schedule(Timer(STAGE_SLA, s.shipment_id, due.due_at, due.payload()))


async def schedule_ship_by(
    shipments: Iterable[Shipment], uow: FulfillmentUnit, config: PipelineConfig
) -> None:
    """Each shipment entering a pipeline with a ship-by cut-off gets that deadline."""
    for s in shipments:
        if (due := ship_by(s, config)) is not None:
            await uow.timers.schedule(Timer(SHIP_BY, s.shipment_id, due.due_at, due.payload()))


async def stage_late(timer: Timer, uow: FulfillmentUnit, config: PipelineConfig) -> list[Event]:
    """A stage deadline passed: if the shipment is still in that stage, report the breach once and
    re-publish the order's progress with the ETA re-computed as if the late stage ended now."""
    return await _breached(timer, uow, config, lambda s, due: is_late(s, due), "stage")


async def ship_by_missed(timer: Timer, uow: FulfillmentUnit, config: PipelineConfig) -> list[Event]:
    """A ship-by cut-off passed: if the shipment is still short of the ship point, report it once
    (``stage`` = where it is) and re-publish the order's progress with the ETA re-computed."""
    return await _breached(timer, uow, config, lambda s, due: missed_ship_by(s, config), "ship_by")


async def _breached(
    timer: Timer,
    uow: FulfillmentUnit,
    config: PipelineConfig,
    late: Callable[[Shipment, Deadline], bool],
    sla: Literal["stage", "ship_by"],
) -> list[Event]:
    due = Deadline.of(timer.key, dict(timer.payload))
    orders = await uow.orders.lock_by_shipment([timer.key])
    if not orders:
        return []
    [(order_id, order)] = orders.items()
    shipments = await uow.shipments.of_orders([order_id])
    shipment = next((s for s in shipments if s.shipment_id == timer.key), None)
    if shipment is None or not late(shipment, due):
        return []
    now = datetime.now(UTC)
    locations = await uow.locations.of(sorted({s.location_id for s in shipments}))
    eta = expected_delivery(order, shipments, locations, config, now)
    metrics.count(metrics.SLA_BREACHES, shipment.pipeline, shipment.stage)
    events: list[Event] = [
        SlaBreached(
            order_id=order_id,
            shipment_id=shipment.shipment_id,
            pipeline=shipment.pipeline,
            stage=shipment.stage,
            sla=sla,
            sla_hours=due.sla_hours,
            stage_entered_at=due.entered_at,
            due_at=due.due_at,
            overdue_seconds=max((now - due.due_at).total_seconds(), 0.0),
            eta=eta,
        )
    ]
    if order.progress in ("in_fulfillment", "partially_shipped", "shipped"):
        events.append(
            OrderFulfillmentProgressed(
                order_id=order_id,
                status=order.progress,
                shipments=[public(s) for s in visible(shipments, config)],
                eta=eta,
                awaiting_stock=order.awaiting_resource,
            )
        )
    return events


async def update_location(update: LocationUpdated, uow: FulfillmentUnit) -> list[Event]:
    await uow.locations.upsert(Location(update.location_id, update.kind, update.lat, update.lon))
    return []


async def receive_allocations(
    allocated: Sequence[OrderAllocated], uow: FulfillmentUnit, config: PipelineConfig
) -> list[list[Event]]:
    """New shipments enter the first stage of their pipeline, known ones take the (reduced) lines,
    and each order's progress is announced afresh. The orders are locked, their shipments and the
    locations read once for the batch; the allocations are applied in order in memory (an order's
    second allocation in the batch sees its first), and orders and shipments written once."""
    known = await uow.orders.lock(sorted({fact.order_id for fact in allocated}))
    book = by_order(await uow.shipments.of_orders(sorted(known)))
    wanted = {s.location_id for fact in allocated for s in fact.shipments}
    wanted.update(s.location_id for shipments in book.values() for s in shipments.values())
    locations = await uow.locations.of(sorted(wanted))
    now = datetime.now(UTC)
    orders: dict[UUID, Order] = {}
    added: dict[str, Shipment] = {}
    changed: dict[str, Shipment] = {}
    results: list[list[Event]] = []
    for fact in allocated:
        shipments = book.setdefault(fact.order_id, {})
        decision = receive_allocation(
            order_of(fact),
            list(shipments.values()),
            parcels_of(fact),
            bool(fact.backordered_lines),
            locations,
            config,
            now,
        )
        orders[fact.order_id] = decision.order
        shipments.update((s.shipment_id, s) for s in decision.shipments)
        for s in decision.entered:
            added[s.shipment_id] = s
        for s in decision.changed:
            (added if s.shipment_id in added else changed)[s.shipment_id] = s
        events: list[Event] = [stage_changed(s, None, s.stage, "entered") for s in decision.entered]
        if decision.progress is not None:
            events.append(
                progressed(decision.order, decision.progress, decision.shipments, locations, config)
            )
        results.append(events)
    if unknown := sorted({s.location_id for s in added.values()} - locations.keys()):
        log.warning(
            "locations unknown to fulfillment; treated as warehouses", extra={"location_ids": unknown}
        )
    await uow.orders.save(list(orders.values()))
    await uow.terms.keep([terms_of(fact) for fact in allocated])
    await uow.shipments.add(list(added.values()))
    await schedule_deadlines(added.values(), uow, config)
    await schedule_ship_by(added.values(), uow, config)
    await uow.shipments.save(list(changed.values()))
    return results


def always_reship(channel: str) -> bool:
    """The packaged default of `in_transit_exception`: a parcel lost in transit is re-shipped."""
    return True


CollectWithinDays = Callable[[str], float]
"""Per channel: days a click-and-collect parcel waits at `ready_for_pickup` before it is not_collected."""

PICKUP_EXPIRY = "pickup_expiry"
"""The durable timer kind of a parcel waiting at its store (key = shipment id)."""


def _week(channel: str) -> float:
    return 7.0


async def apply_updates(
    updates: Sequence[FulfillmentUpdate],
    uow: FulfillmentUnit,
    config: PipelineConfig,
    reships: Callable[[str], bool] = always_reship,
    collect_within: CollectWithinDays = _week,
) -> list[list[Event] | Rejected]:
    """Move shipments along their pipelines; a refused move is dead-lettered with its reason (and
    its update id recorded, so a repeat of it changes nothing either). The orders of the batch's
    shipments are locked and read with all their shipments once; the updates are applied in order
    in memory (a shipment's second update in the batch sees its first), and written once."""
    orders = await uow.orders.lock_by_shipment(sorted({u.shipment_id for u in updates}))
    book = by_order(await uow.shipments.of_orders(sorted(orders)))
    order_of_shipment = {sid: order_id for order_id, shipments in book.items() for sid in shipments}
    first_of_each_id: dict[str, str] = {}
    for u in updates:
        if u.shipment_id in order_of_shipment:
            first_of_each_id.setdefault(u.update_id, u.shipment_id)
    fresh = await uow.updates.claim(list(first_of_each_id.items()))
    locations: dict[str, Location] | None = None
    outcomes: dict[str, str] = {}
    saved: dict[str, Shipment] = {}
    progressed_orders: dict[UUID, Order] = {}
    results: list[list[Event] | Rejected] = []
    for update in updates:
        order_id = order_of_shipment.get(update.shipment_id)
        if order_id is None:
            results.append(Rejected("unknown_shipment", f"no shipment {update.shipment_id}"))
            continue
        if update.update_id not in fresh:
            results.append([])
            continue
        fresh.discard(update.update_id)
        shipments = book[order_id]
        if update.exception is not None:
            reship = reships(orders[order_id].channel)
            lost = report_exception(
                orders[order_id], list(shipments.values()), update.shipment_id, reship, config
            )
            terms = None if reship else await uow.terms.of(order_id)
            if not reship and terms is None:
                lost = Refusal("unknown_terms", f"fulfillment kept no prices for order {order_id}")
            if isinstance(lost, Refusal):
                outcomes[update.update_id] = lost.code
                results.append(Rejected(lost.code, lost.message))
                continue
            outcomes[update.update_id] = f"exception:{update.exception.value}"
            shipments[lost.shipment.shipment_id] = saved[lost.shipment.shipment_id] = lost.shipment
            if lost.order != orders[order_id]:
                orders[order_id] = progressed_orders[order_id] = lost.order
            caused = in_transit_exception(lost, update.exception.value, terms)
            if lost.progress is not None:
                if locations is None:
                    locations = await uow.locations.of(
                        sorted({s.location_id for shipments in book.values() for s in shipments.values()})
                    )
                caused.append(progressed(lost.order, lost.progress, lost.shipments, locations, config))
            results.append(caused)
            continue
        decision = report_stage(orders[order_id], list(shipments.values()), report_of(update), config)
        if isinstance(decision, Refusal):
            outcomes[update.update_id] = decision.code
            results.append(Rejected(decision.code, decision.message))
            continue
        outcomes[update.update_id] = decision.move.kind.value
        shipment, move = decision.shipment, decision.move
        shipments[shipment.shipment_id] = saved[shipment.shipment_id] = shipment
        if decision.order != orders[order_id]:
            orders[order_id] = progressed_orders[order_id] = decision.order
        events: list[Event]
        if move.kind is MoveKind.FAILED:
            reason = update.note or FAILED
            events = [
                stage_changed(shipment, decision.before.stage, None, "left", reason=reason),
                ShipmentFailed(
                    order_id=order_id,
                    shipment_id=shipment.shipment_id,
                    location_id=shipment.location_id,
                    lines=contract_lines(shipment.lines),
                    reason=reason,
                ),
            ]
        elif move.kind is MoveKind.STAYED:
            events = []
        else:
            events = [stage_changed(shipment, move.from_stage, move.to_stage, "moved")]
            if move.to_stage == READY_FOR_PICKUP:
                due = datetime.now(UTC) + timedelta(days=collect_within(orders[order_id].channel))
                await uow.timers.schedule(Timer(PICKUP_EXPIRY, shipment.shipment_id, due, {}))
            if move.kind is MoveKind.LEFT:
                events.append(stage_changed(shipment, move.to_stage, None, "left", reason="completed"))
            if decision.shipped:
                events.append(
                    ShipmentShipped(
                        order_id=order_id,
                        shipment_id=shipment.shipment_id,
                        location_id=shipment.location_id,
                        lines=contract_lines(shipment.lines),
                    )
                )
        progress = decision.progress
        if progress is None and decision.eta_changed and decision.order.progress is not None:
            progress = decision.order.progress  # the same status, announced again with the carrier's ETA
        if progress is not None:
            if locations is None:  # read once, and only for a batch in which some order progressed
                locations = await uow.locations.of(
                    sorted({s.location_id for shipments in book.values() for s in shipments.values()})
                )
            events.append(progressed(decision.order, progress, decision.shipments, locations, config))
        results.append(events)
    await uow.shipments.save(list(saved.values()))
    await schedule_deadlines(saved.values(), uow, config)
    await uow.orders.save(list(progressed_orders.values()))
    await uow.updates.record(outcomes)
    return results


def in_transit_exception(lost: Lost, exception: str, terms: Terms | None) -> list[Event]:
    """The parcel leaves its pipeline (a public `left` stage event, with the exception as reason);
    allocation writes its units off and, re-shipping (no ``terms``), sources them again; refunding,
    payments is asked for the price of its units (``terms``: what the customer paid)."""
    s = lost.shipment
    events: list[Event] = [
        stage_changed(s, s.stage, None, "left", reason=exception),
        ShipmentLost(
            order_id=s.order_id,
            shipment_id=s.shipment_id,
            location_id=s.location_id,
            lines=contract_lines(s.lines),
            exception=exception,
            reship=terms is None,
        ),
    ]
    if terms is None:
        return events
    lines = [
        RefundLine(sku=sku, quantity=q, unit_price=terms.prices[sku], amount=terms.prices[sku] * q)
        for sku, q in sorted(s.lines.items())
        if q > 0 and sku in terms.prices
    ]
    amount = sum((line.amount for line in lines), Decimal(0))
    events.append(
        RefundRequested(
            refund_id=f"lost:{s.shipment_id}",
            order_id=s.order_id,
            cause="in_transit_exception",
            shipment_id=s.shipment_id,
            payment_reference=terms.payment_reference,
            currency=terms.currency,
            lines=lines,
            shipping=Decimal(0),
            amount=amount,
        )
    )
    return events


async def decide_cancel(
    request: OrderCancelForwarded, uow: FulfillmentUnit, config: PipelineConfig
) -> list[Event]:
    """Accept only what has not shipped: take those lines out of their pipelines, or refuse it all.
    What is left of the order may now be all shipped, delivered or refunded: that is announced."""
    order = (await uow.orders.lock([request.order_id])).get(request.order_id)
    if order is None:
        raise Rejected("unknown_order", f"fulfillment never saw order {request.order_id}")
    shipments = await uow.shipments.of_orders([request.order_id])
    lines = None if request.lines is None else [(line.sku, line.quantity) for line in request.lines]
    plan = plan_cancel(shipments, lines, config)
    if isinstance(plan, Refusal):
        refused = OrderCancelRefused(
            order_id=request.order_id,
            request_id=request.request_id,
            lines=request.lines,
            reason=request.reason,
            reasons=[Reason(code=plan.code, message=plan.message)],
        )
        return [refused]
    await uow.shipments.save(plan.changed)
    accepted = OrderCancelAccepted(
        order_id=request.order_id,
        request_id=request.request_id,
        lines=request.lines,
        reason=request.reason,
        whole=plan.whole,
        release=[
            PublicShipment(
                shipment_id=p.shipment_id, location_id=p.location_id, lines=contract_lines(p.lines)
            )
            for p in plan.release
        ],
    )
    left = [stage_changed(s, s.stage, None, "left", reason="cancelled") for s in plan.left]
    return [*left, *(await _progress_after(order, shipments, plan.changed, uow, config)), accepted]


async def _progress_after(
    order: Order,
    before: Sequence[Shipment],
    changed: Sequence[Shipment],
    uow: FulfillmentUnit,
    config: PipelineConfig,
) -> list[Event]:
    """The order's progress once parcels left their pipelines without moving on (cancelled, not
    collected), announced when it changed: the rest may have shipped, arrived, or been refunded."""
    now = list(
        by_shipment_id(({s.shipment_id: s for s in before} | {s.shipment_id: s for s in changed}).values())
    )
    after, progress = announce(order, now, config)
    if progress is None:
        return []
    await uow.orders.save([after])
    locations = await uow.locations.of(sorted({s.location_id for s in now}))
    return [progressed(after, progress, now, locations, config)]


async def expire_pickup(timer: Timer, uow: FulfillmentUnit, config: PipelineConfig) -> list[Event]:
    """A parcel left at its store longer than the channel allows is `not_collected`: it leaves its
    pipeline and allocation releases its units (to the oldest backorders) — cancelling the order when
    nothing else of it is in a pipeline. A parcel collected (or gone) meanwhile changes nothing."""
    orders = await uow.orders.lock_by_shipment([timer.key])
    if not orders:
        return []
    [(order_id, order)] = orders.items()
    shipments = await uow.shipments.of_orders([order_id])
    plan = not_collected(shipments, timer.key, config)
    if plan is None:
        return []
    await uow.shipments.save(plan.changed)
    accepted = OrderCancelAccepted(
        order_id=order_id,
        request_id="",
        reason=NOT_COLLECTED,
        whole=plan.whole,
        release=[
            PublicShipment(
                shipment_id=p.shipment_id, location_id=p.location_id, lines=contract_lines(p.lines)
            )
            for p in plan.release
        ],
    )
    left = [stage_changed(s, s.stage, None, "left", reason=NOT_COLLECTED) for s in plan.left]
    return [*left, *(await _progress_after(order, shipments, plan.changed, uow, config)), accepted]


async def decide_edit(
    request: OrderEditForwarded, uow: FulfillmentUnit, config: PipelineConfig
) -> list[Event]:
    """Fulfillment is the one that knows whether a parcel left: an edit is accepted only while no
    shipment of the order has passed its pipeline's ship point, and then every shipment leaves its
    pipeline (allocation reserves the edited order and sends new ones). The order's row is locked,
    so an edit and a stage update of its shipments are applied one after the other, never across."""
    if request.order_id not in await uow.orders.lock([request.order_id]):
        raise Rejected("unknown_order", f"fulfillment never saw order {request.order_id}")
    shipments = await uow.shipments.of_orders([request.order_id])
    plan = plan_cancel(shipments, None, config)
    if isinstance(plan, Refusal):
        refused = OrderEditRefused(
            order_id=request.order_id,
            request_id=request.request_id,
            reasons=[Reason(code=plan.code, message=plan.message)],
        )
        return [refused]
    await uow.shipments.save(plan.changed)
    accepted = OrderEditAccepted(
        order_id=request.order_id,
        request_id=request.request_id,
        order=request.order,
        release=[
            PublicShipment(
                shipment_id=p.shipment_id, location_id=p.location_id, lines=contract_lines(p.lines)
            )
            for p in plan.release
        ],
    )
    return [*(stage_changed(s, s.stage, None, "left", reason="edited") for s in plan.left), accepted]
