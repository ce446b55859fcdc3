"""An order's shipments in fulfillment: allocations received, stage reports, cancel plans. Pure: no I/O.

Rules in words:
- An allocation names every current shipment of its order. A shipment new to fulfillment enters
  the first stage of the pipeline selected by the order's shipping method and channel and its
  location's kind (a location fulfillment has not heard of counts as a warehouse). A known
  shipment still in its pipeline takes the allocation's lines (fewer after a partial cancel); one
  that left its pipeline keeps what it had.
- Lines an allocation says are waiting for stock make the order await resources; an allocation
  without them clears that. Every allocation makes the order `allocated` again at intake, so its
  progress is announced afresh.
- A stage report moves its shipment forward only (``pipelines.advance``); the move that reaches
  the ship point ships the parcel. A carrier's ETA (with a move, or alone with the current stage)
  replaces the estimate for that shipment and announces the order's progress again. A failed parcel leaves its pipeline and its order awaits
  resources until allocation sources the lines again.
- The order's progress (``pipelines.order_progress``) is announced whenever it changes, with the
  shipments a customer can see (in a pipeline, or delivered) and the latest of their ETAs.
- A cancel takes only what has not shipped. A whole-order cancel is refused once any parcel has
  shipped. A cancel of lines takes each line from the unshipped shipments in shipment-id order; a
  line it cannot cover is refused: `already_shipped` when the rest of that sku has left,
  `invalid_cancel_lines` when the order never had it. A shipment emptied by a cancel leaves its
  pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from libs.contracts.vocabulary import LocationKind, ShippingMethod
from libs.geo import distance_km
from services.fulfillment.domain.pipelines import (
    READY_FOR_PICKUP,
    Move,
    MoveKind,
    PipelineConfig,
    Progress,
    Refusal,
    ShipmentState,
    advance,
    eta,
    order_progress,
)

Lines = Mapping[str, int]
"""Units per sku."""


@dataclass(frozen=True)
class Location:
    location_id: str
    kind: LocationKind
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True)
class Order:
    order_id: UUID
    channel: str
    shipping_method: ShippingMethod
    lat: float | None = None
    lon: float | None = None
    """Where the parcels go, only as precise as ``coarse`` makes it: never a home's position."""
    progress: Progress | None = None
    """The progress last announced (None: nothing announced since the last allocation)."""
    awaiting_resource: bool = False
    """A parcel failed and its lines are in no shipment yet (being sourced again, or waiting for stock)."""


COARSE_DECIMALS = 1
"""Degrees to one decimal: about 11 km, a town rather than a street."""


def coarse(degrees: float | None) -> float | None:
    """Fulfillment needs the destination for transit days only, so it keeps it to about 11 km:
    enough for a day's transit, too coarse to find a home, so fulfillment keeps no personal data
    and has nothing to erase."""
    return None if degrees is None else round(degrees, COARSE_DECIMALS)


@dataclass(frozen=True)
class Shipment:
    shipment_id: str
    order_id: UUID
    location_id: str
    pipeline: str
    stage: str
    active: bool
    """Still in its pipeline: not delivered, failed or cancelled."""
    lines: Lines
    stage_entered_at: datetime
    carrier: str | None = None
    tracking_number: str | None = None
    carrier_eta: datetime | None = None
    """The carrier's expected delivery: replaces Baton's estimate for this shipment once given."""


@dataclass(frozen=True)
class Parcel:
    """Lines of one shipment from one location: as allocation planned them, or as a cancel releases them."""

    shipment_id: str
    location_id: str
    lines: Lines


def by_shipment_id(shipments: Iterable[Shipment]) -> tuple[Shipment, ...]:
    """An order's shipments in the one order every rule walks them in."""
    return tuple(sorted(shipments, key=lambda s: s.shipment_id))


def announce(
    order: Order, shipments: Sequence[Shipment], config: PipelineConfig
) -> tuple[Order, Progress | None]:
    """The order with its progress brought up to date, and that progress if it must be announced
    (it changed, and something of the order is in a pipeline or delivered)."""
    states = [ShipmentState(config.get(s.pipeline), s.stage, s.active) for s in shipments]
    status = order_progress(states, order.awaiting_resource)
    if status is None or status == order.progress:
        return order, None
    return replace(order, progress=status), status


def visible(shipments: Sequence[Shipment], config: PipelineConfig) -> list[Shipment]:
    """The shipments a customer sees: still in a pipeline, or delivered (not failed or cancelled)."""
    return [s for s in shipments if s.active or s.stage == config.get(s.pipeline).last]


def expected_delivery(
    order: Order,
    shipments: Sequence[Shipment],
    locations: Mapping[str, Location],
    config: PipelineConfig,
    now: datetime | None = None,
) -> datetime | None:
    """When the last parcel still in a pipeline should arrive: its remaining stage hours plus the
    transit from its location to the customer (no transit when either position is unknown), or the
    carrier's ETA where one was given. Given ``now``, a parcel late in its stage is taken to leave
    that stage now."""
    etas = []
    for s in shipments:
        if not s.active:
            continue
        here = locations.get(s.location_id)
        km = None
        if (
            here
            and here.lat is not None
            and here.lon is not None
            and order.lat is not None
            and order.lon is not None
        ):
            km = distance_km(here.lat, here.lon, order.lat, order.lon)
        if s.carrier_eta is not None:
            etas.append(s.carrier_eta)
            continue
        etas.append(
            eta(config.get(s.pipeline), s.stage, s.stage_entered_at, km, config.transit_km_per_day, now)
        )
    return max(etas, default=None)


@dataclass(frozen=True)
class Allocated:
    """What an allocation did to an order."""

    order: Order
    shipments: tuple[Shipment, ...]
    """Every shipment of the order now, by shipment id."""
    entered: tuple[Shipment, ...]
    """Shipments new to fulfillment, in the allocation's order: each entered its first stage."""
    changed: tuple[Shipment, ...]
    """Known shipments that took the allocation's (new) lines."""
    progress: Progress | None
    """The order's progress to announce, if any."""


def receive_allocation(
    order: Order,
    known: Sequence[Shipment],
    parcels: Sequence[Parcel],
    waiting_for_stock: bool,
    locations: Mapping[str, Location],
    config: PipelineConfig,
    now: datetime,
) -> Allocated:
    """New shipments enter the first stage of their pipeline; known ones still in a pipeline take
    the allocation's lines; the order's progress is announced afresh."""
    shipments = {s.shipment_id: s for s in known}
    entered: list[Shipment] = []
    changed: list[Shipment] = []
    for parcel in parcels:
        existing = shipments.get(parcel.shipment_id)
        if existing is not None:
            if existing.active and dict(existing.lines) != dict(parcel.lines):
                shipments[parcel.shipment_id] = replace(existing, lines=dict(parcel.lines))
                changed.append(shipments[parcel.shipment_id])
            continue
        location = locations.get(parcel.location_id)
        kind = location.kind if location is not None else LocationKind.WAREHOUSE
        pipeline = config.select(order.shipping_method, kind, order.channel)
        new = Shipment(
            parcel.shipment_id,
            order.order_id,
            parcel.location_id,
            pipeline.name,
            pipeline.first,
            True,
            dict(parcel.lines),
            now,
        )
        shipments[new.shipment_id] = new
        entered.append(new)
    after = by_shipment_id(shipments.values())
    fresh = replace(order, progress=None, awaiting_resource=waiting_for_stock)
    order, progress = announce(fresh, after, config)
    return Allocated(order, after, tuple(entered), tuple(changed), progress)


@dataclass(frozen=True)
class StageReport:
    """A warehouse or carrier says a shipment reached ``stage`` (or `failed`, with a ``note`` why)."""

    shipment_id: str
    stage: str
    occurred_at: datetime
    carrier: str | None = None
    tracking_number: str | None = None
    note: str | None = None
    eta: datetime | None = None
    """The carrier's expected delivery, if it gave one."""


@dataclass(frozen=True)
class Reported:
    """What a stage report did: the shipment's move, and what followed for its order."""

    order: Order
    before: Shipment
    shipment: Shipment
    """The shipment after the move."""
    shipments: tuple[Shipment, ...]
    """Every shipment of the order after the move, by shipment id."""
    move: Move
    shipped: bool
    """The move reached the ship point: the parcel left its location."""
    progress: Progress | None
    eta_changed: bool = False
    """The carrier gave a new ETA: the order's progress is announced again with it."""


def report_stage(
    order: Order, shipments: Sequence[Shipment], report: StageReport, config: PipelineConfig
) -> Reported | Refusal:
    """Move the reported shipment (one of ``shipments``, the order's) forward, or say why not."""
    before = next(s for s in shipments if s.shipment_id == report.shipment_id)
    pipeline = config.get(before.pipeline)
    eta_changed = report.eta is not None and report.eta != before.carrier_eta
    if report.stage == before.stage and before.active and report.eta is not None:
        after = replace(before, carrier_eta=report.eta)
        now = by_shipment_id(after if s.shipment_id == after.shipment_id else s for s in shipments)
        stayed = Move(MoveKind.STAYED, before.stage, before.stage)
        return Reported(order, before, after, now, stayed, False, None, eta_changed)
    move = advance(pipeline, before.stage, report.stage, active=before.active)
    if isinstance(move, Refusal):
        return move
    if move.kind is MoveKind.FAILED:
        after = replace(before, active=False)
        order = replace(order, awaiting_resource=True)
    else:
        after = replace(
            before,
            stage=move.to_stage,
            stage_entered_at=report.occurred_at,
            active=move.kind is not MoveKind.LEFT,
            carrier=report.carrier or before.carrier,
            tracking_number=report.tracking_number or before.tracking_number,
            carrier_eta=report.eta or before.carrier_eta,
        )
    now = by_shipment_id(after if s.shipment_id == after.shipment_id else s for s in shipments)
    shipped = move.kind is not MoveKind.FAILED and pipeline.ships_between(move.from_stage, move.to_stage)
    order, progress = announce(order, now, config)
    return Reported(order, before, after, now, move, shipped, progress, eta_changed and after.active)


@dataclass(frozen=True)
class Lost:
    """A carrier's exception applied: the parcel is out of its pipeline, its order's progress."""

    order: Order
    shipment: Shipment
    shipments: tuple[Shipment, ...]
    progress: Progress | None


def report_exception(
    order: Order, shipments: Sequence[Shipment], shipment_id: str, reship: bool, config: PipelineConfig
) -> Lost | Refusal:
    """A parcel that shipped and is not delivered will not arrive: it leaves its pipeline. Re-shipped,
    its order awaits the replacement (allocation sources it again); refunded, the order goes on with
    the parcels it has left."""
    before = next(s for s in shipments if s.shipment_id == shipment_id)
    if not before.active or not config.get(before.pipeline).has_shipped(before.stage):
        where = "delivered or out of its pipeline" if not before.active else f"at {before.stage!r}"
        return Refusal(
            "not_in_transit", f"{shipment_id} has not shipped or is no longer on its way ({where})"
        )
    after = replace(before, active=False)
    now = by_shipment_id(after if s.shipment_id == shipment_id else s for s in shipments)
    order, progress = announce(
        replace(order, awaiting_resource=order.awaiting_resource or reship), now, config
    )
    return Lost(order, after, now, progress)


@dataclass(frozen=True)
class CancelPlan:
    """A cancel fulfillment accepts: which lines of which shipments to release."""

    release: tuple[Parcel, ...]
    """By shipment id: the lines each shipment gives back (allocation releases their stock)."""
    changed: tuple[Shipment, ...]
    """The shipments that gave lines, after the cancel: fewer lines, or out of their pipeline when emptied."""
    whole: bool
    """Nothing of the order is left in a pipeline and nothing has shipped."""

    @property
    def left(self) -> tuple[Shipment, ...]:
        """Shipments the cancel emptied: they leave their pipeline."""
        return tuple(s for s in self.changed if not s.active)


def _past_ship_point(shipment: Shipment, config: PipelineConfig) -> bool:
    pipeline = config.get(shipment.pipeline)
    return pipeline.has(shipment.stage) and pipeline.has_shipped(shipment.stage)


def plan_cancel(
    shipments: Sequence[Shipment], lines: Sequence[tuple[str, int]] | None, config: PipelineConfig
) -> CancelPlan | Refusal:
    """Cancel the whole order (``lines`` None) or these (sku, units), taking only what has not shipped."""
    ordered = by_shipment_id(shipments)
    cancellable = [s for s in ordered if s.active and not config.get(s.pipeline).has_shipped(s.stage)]
    unshipped = {s.shipment_id for s in cancellable}
    shipped = [  # on its way, delivered, or lost on its way (it left, and was re-shipped or refunded)
        s
        for s in ordered
        if s.shipment_id not in unshipped
        and any(s.lines.values())
        and (s.active or _past_ship_point(s, config))
    ]
    release: dict[str, dict[str, int]] = {}
    if lines is None:
        if shipped:
            return Refusal("already_shipped", f"{len(shipped)} shipment(s) already shipped")
        release = {s.shipment_id: dict(s.lines) for s in cancellable}
    else:
        for sku, units in lines:
            remaining = units
            for s in cancellable:
                taken = release.get(s.shipment_id, {}).get(sku, 0)
                take = min(remaining, s.lines.get(sku, 0) - taken)
                if take > 0:
                    release.setdefault(s.shipment_id, {})[sku] = taken + take
                    remaining -= take
            if remaining > 0:
                if any(sku in s.lines for s in shipped):
                    return Refusal("already_shipped", f"{sku}: only part of it can still be cancelled")
                return Refusal("invalid_cancel_lines", f"{sku}: {units} not on the order")
    changed = []
    for s in cancellable:
        if taken_here := release.get(s.shipment_id):
            rest = {
                sku: q - taken_here.get(sku, 0) for sku, q in s.lines.items() if q > taken_here.get(sku, 0)
            }
            changed.append(replace(s, lines=rest, active=bool(rest)))
    after = {s.shipment_id: s for s in ordered} | {s.shipment_id: s for s in changed}
    whole = not shipped and not any(s.active and s.lines for s in after.values())
    location = {s.shipment_id: s.location_id for s in ordered}
    parcels = tuple(Parcel(sid, location[sid], taken) for sid, taken in sorted(release.items()) if taken)
    return CancelPlan(parcels, tuple(changed), whole)


def not_collected(
    shipments: Sequence[Shipment], shipment_id: str, config: PipelineConfig
) -> CancelPlan | None:
    """A click-and-collect parcel still waiting at `ready_for_pickup` when its collection time is up
    leaves its pipeline and gives all its units back (the whole order is cancelled when nothing else
    of it is in a pipeline or has left); None when it moved on meanwhile (collected, failed, cancelled)."""
    ordered = by_shipment_id(shipments)
    target = next((s for s in ordered if s.shipment_id == shipment_id), None)
    if target is None or not target.active or target.stage != READY_FOR_PICKUP:
        return None
    rest = [s for s in ordered if s.shipment_id != shipment_id and any(s.lines.values())]
    shipped = any(config.get(s.pipeline).has_shipped(s.stage) for s in rest)
    whole = not shipped and not any(s.active for s in rest)
    parcel = Parcel(target.shipment_id, target.location_id, dict(target.lines))
    return CancelPlan((parcel,), (replace(target, lines={}, active=False),), whole)
