"""Fulfillment's use cases: shipments into pipelines, stage updates, cancellation checks, order progress."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from uuid import UUID

import yaml

from libs.contracts.fulfillment import FulfillmentUpdate, StageChanged
from libs.contracts.inventory import LocationUpdated
from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderCancelAccepted,
    OrderCancelForwarded,
    OrderCancelRefused,
    OrderFulfillmentProgressed,
    ShipmentFailed,
    ShipmentShipped,
)
from libs.contracts.orders import Reason, Shipment, ShipmentLine
from libs.geo import distance_km
from libs.platform import metrics
from libs.platform.messaging import Outgoing, Rejected
from services.fulfillment.adapters.store import OrderRow, PgFulfillmentStore, ShipmentRow
from services.fulfillment.domain.pipelines import (
    FAILED,
    MoveKind,
    PipelineConfig,
    Refusal,
    ShipmentState,
    advance,
    eta,
    order_progress,
    parse_config,
)

log = logging.getLogger("baton.fulfillment")


@cache
def load_pipelines() -> PipelineConfig:
    """The pipelines shipped with the service (`services/fulfillment/pipelines.yaml`)."""
    text = resources.files("services.fulfillment").joinpath("pipelines.yaml").read_text()
    return parse_config(yaml.safe_load(text))


@dataclass(frozen=True)
class Topics:
    lifecycle: str
    stage_changes: str


def _stage_event(
    t: Topics, s: ShipmentRow, left: str | None, entered: str | None, change: str, reason: str | None = None
) -> Outgoing:
    event = StageChanged(
        order_id=s.order_id,
        shipment_id=s.shipment_id,
        pipeline=s.pipeline,
        left_stage=left,
        entered_stage=entered,
        change=change,
        reason=reason,
    )  # type: ignore[arg-type]
    metrics.count(metrics.STAGE_CHANGES, s.pipeline, entered or left or "", change)
    return Outgoing.event(t.stage_changes, str(s.order_id), event)


def contract_lines(lines: dict[str, int]) -> list[ShipmentLine]:
    """A shipment's {sku: units} as contract lines, sku order, empty lines left out."""
    return [ShipmentLine(sku=sku, quantity=units) for sku, units in sorted(lines.items()) if units > 0]


def _public(s: ShipmentRow) -> Shipment:
    return Shipment(
        shipment_id=s.shipment_id,
        location_id=s.location_id,
        lines=contract_lines(s.lines),
        pipeline=s.pipeline,
        stage=s.stage,
        carrier=s.carrier,
        tracking_number=s.tracking_number,
    )


async def update_location(store: PgFulfillmentStore, update: LocationUpdated) -> list[Outgoing]:
    await store.upsert_location(update.location_id, update.kind.value, update.lat, update.lon)
    return []


async def _progress(
    store: PgFulfillmentStore, order: OrderRow, config: PipelineConfig, t: Topics
) -> list[Outgoing]:
    """Tell intake when the order as a whole moved, with an ETA for the latest shipment."""
    shipments = await store.shipments_of(order.order_id)
    states = [ShipmentState(config.get(s.pipeline), s.stage, s.active) for s in shipments]
    status = order_progress(states, order.awaiting_resource)
    if status is None or status == order.progress:
        return []
    await store.set_progress(order.order_id, status)
    etas = []
    for s in shipments:
        if not s.active:
            continue
        loc = await store.location(s.location_id)
        km = None
        if loc and None not in (loc[1], loc[2], order.lat, order.lon):
            km = distance_km(loc[1], loc[2], order.lat, order.lon)  # type: ignore[arg-type]
        etas.append(eta(config.get(s.pipeline), s.stage, s.stage_entered_at, km, config.transit_km_per_day))
    visible = [_public(s) for s in shipments if s.active or s.stage == config.get(s.pipeline).last]
    fact = OrderFulfillmentProgressed(
        order_id=order.order_id,
        status=status,  # type: ignore[arg-type]
        shipments=visible,
        eta=max(etas) if etas else None,
    )
    return [Outgoing.event(t.lifecycle, str(order.order_id), fact)]


async def receive_allocation(
    store: PgFulfillmentStore, fact: OrderAllocated, config: PipelineConfig, t: Topics
) -> list[Outgoing]:
    """New shipments enter the first stage of their pipeline; known ones take the (reduced) lines."""
    address = fact.order.shipping_address
    await store.upsert_order(
        OrderRow(
            fact.order_id,
            fact.order.channel,
            fact.order.shipping_method.value,
            address.lat,
            address.lon,
            None,
        )
    )
    order = await store.lock_order(fact.order_id)
    assert order is not None
    # Every allocation (first, re-sourced, reduced) makes the order `allocated` again at intake,
    # so its progress is announced afresh.
    await store.set_progress(fact.order_id, None)
    awaiting = bool(fact.backordered_lines)
    await store.set_awaiting_resource(fact.order_id, awaiting)
    order = replace(order, progress=None, awaiting_resource=awaiting)
    known = {s.shipment_id: s for s in await store.shipments_of(fact.order_id)}
    out: list[Outgoing] = []
    now = datetime.now(UTC)
    for shipment in fact.shipments:
        lines = {line.sku: line.quantity for line in shipment.lines}
        if (existing := known.get(shipment.shipment_id)) is not None:
            if existing.active and existing.lines != lines:
                existing.lines = lines
                await store.save_shipment(existing)
            continue
        loc = await store.location(shipment.location_id)
        if loc is None:
            log.warning(
                "location unknown to fulfillment; treating it as a warehouse",
                extra={"location_id": shipment.location_id},
            )
        pipeline = config.select(order.shipping_method, loc[0] if loc else "warehouse", order.channel)
        row = ShipmentRow(
            shipment.shipment_id,
            fact.order_id,
            shipment.location_id,
            pipeline.name,
            pipeline.first,
            True,
            lines,
            None,
            None,
            now,
        )
        await store.insert_shipment(row)
        out.append(_stage_event(t, row, None, pipeline.first, "entered"))
    return out + await _progress(store, order, config, t)


async def apply_update(
    store: PgFulfillmentStore, update: FulfillmentUpdate, config: PipelineConfig, t: Topics
) -> list[Outgoing]:
    """Move a shipment along its pipeline; a refused move is dead-lettered with its reason."""
    order_id = await store.shipment_order(update.shipment_id)
    if order_id is None:
        raise Rejected("unknown_shipment", f"no shipment {update.shipment_id}")
    order = await store.lock_order(order_id)
    assert order is not None
    shipment = next(s for s in await store.shipments_of(order_id) if s.shipment_id == update.shipment_id)
    pipeline = config.get(shipment.pipeline)
    move = advance(pipeline, shipment.stage, update.stage, active=shipment.active)
    if not await store.record_update(
        update.update_id, update.shipment_id, move.code if isinstance(move, Refusal) else move.kind.value
    ):
        return []
    if isinstance(move, Refusal):
        raise Rejected(move.code, move.message)
    out: list[Outgoing] = []
    if move.kind is MoveKind.FAILED:
        shipment.active = False
        await store.save_shipment(shipment)
        await store.set_awaiting_resource(order_id, True)
        order = replace(order, awaiting_resource=True)
        out.append(_stage_event(t, shipment, shipment.stage, None, "left", reason=update.note or FAILED))
        lines = contract_lines(shipment.lines)
        out.append(
            Outgoing.event(
                t.lifecycle,
                str(order_id),
                ShipmentFailed(
                    order_id=order_id,
                    shipment_id=shipment.shipment_id,
                    location_id=shipment.location_id,
                    lines=lines,
                    reason=update.note or "failed",
                ),
            )
        )
        return out + await _progress(store, order, config, t)
    crossed_ship_point = (
        pipeline.index(move.from_stage) < pipeline.index(pipeline.ships_at) <= pipeline.index(move.to_stage)
    )
    shipment.stage = move.to_stage
    shipment.stage_entered_at = update.occurred_at
    shipment.carrier = update.carrier or shipment.carrier
    shipment.tracking_number = update.tracking_number or shipment.tracking_number
    if move.kind is MoveKind.LEFT:
        shipment.active = False
    await store.save_shipment(shipment)
    out.append(_stage_event(t, shipment, move.from_stage, move.to_stage, "moved"))
    if move.kind is MoveKind.LEFT:
        out.append(_stage_event(t, shipment, move.to_stage, None, "left", reason="completed"))
    if crossed_ship_point:
        out.append(
            Outgoing.event(
                t.lifecycle,
                str(order_id),
                ShipmentShipped(
                    order_id=order_id,
                    shipment_id=shipment.shipment_id,
                    location_id=shipment.location_id,
                    lines=contract_lines(shipment.lines),
                ),
            )
        )
    return out + await _progress(store, order, config, t)


async def decide_cancel(
    store: PgFulfillmentStore, request: OrderCancelForwarded, config: PipelineConfig, t: Topics
) -> list[Outgoing]:
    """Accept only what has not shipped: take those lines out of their pipelines, or refuse it all."""
    order = await store.lock_order(request.order_id)
    if order is None:
        raise Rejected("unknown_order", f"fulfillment never saw order {request.order_id}")
    shipments = await store.shipments_of(request.order_id)
    cancellable = [
        s
        for s in shipments
        if s.active
        and config.get(s.pipeline).index(s.stage)
        < config.get(s.pipeline).index(config.get(s.pipeline).ships_at)
    ]
    shipped = [
        s
        for s in shipments
        if s not in cancellable
        and s.stage != FAILED
        and any(s.lines.values())
        and (s.active or s.stage == config.get(s.pipeline).last)
    ]

    def refuse(code: str, message: str) -> list[Outgoing]:
        refusal = OrderCancelRefused(
            order_id=request.order_id,
            request_id=request.request_id,
            lines=request.lines,
            reason=request.reason,
            reasons=[Reason(code=code, message=message)],
        )
        return [Outgoing.event(t.lifecycle, str(request.order_id), refusal)]

    release: dict[str, dict[str, int]] = {}
    if request.lines is None:
        if shipped:
            return refuse("already_shipped", f"{len(shipped)} shipment(s) already shipped")
        release = {s.shipment_id: dict(s.lines) for s in cancellable}
    else:
        for line in request.lines:
            remaining = line.quantity
            for s in cancellable:
                take = min(
                    remaining, s.lines.get(line.sku, 0) - release.get(s.shipment_id, {}).get(line.sku, 0)
                )
                if take > 0:
                    release.setdefault(s.shipment_id, {})[line.sku] = (
                        release.get(s.shipment_id, {}).get(line.sku, 0) + take
                    )
                    remaining -= take
            if remaining > 0:
                if any(line.sku in s.lines for s in shipped):
                    return refuse("already_shipped", f"{line.sku}: only part of it can still be cancelled")
                return refuse("invalid_cancel_lines", f"{line.sku}: {line.quantity} not on the order")
    out: list[Outgoing] = []
    for s in cancellable:
        taken = release.get(s.shipment_id)
        if not taken:
            continue
        s.lines = {sku: q - taken.get(sku, 0) for sku, q in s.lines.items() if q - taken.get(sku, 0) > 0}
        if not s.lines:
            s.active = False
            out.append(_stage_event(t, s, s.stage, None, "left", reason="cancelled"))
        await store.save_shipment(s)
    whole = not any(s.active and s.lines for s in shipments) and not shipped
    accepted = OrderCancelAccepted(
        order_id=request.order_id,
        request_id=request.request_id,
        lines=request.lines,
        reason=request.reason,
        whole=whole,
        release=[
            Shipment(
                shipment_id=sid,
                location_id=next(s.location_id for s in shipments if s.shipment_id == sid),
                lines=contract_lines(lines),
            )
            for sid, lines in sorted(release.items())
        ],
    )
    return [*out, Outgoing.event(t.lifecycle, str(request.order_id), accepted)]


def order_id_of(value: str) -> UUID:
    return UUID(value)
