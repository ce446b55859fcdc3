"""Sourcing rules: where each line of an order ships from. Pure: plain data in, a plan out.

In words, in order of precedence:
1. Only active locations that serve the destination country; `express` orders only from warehouses.
   A click-and-collect order (`pickup`) only from its pickup store, or from warehouses too (a
   transfer to the store) for a channel whose policy allows it; the destination country is the
   store's business then.
2. Fewest shipments first: one location that can ship the whole order beats any split;
   otherwise split across the fewest locations, never more than `max_shipments`.
3. Among plans with as many shipments, the lowest cost wins: each used location's
   `cost_per_shipment` plus `cost_per_km` times its distance to the customer (when both are known).
   Remaining ties go to the alphabetically first locations, so the result is deterministic.
4. Never plan more than is available (on hand minus reserved). If the order cannot be covered,
   the plan is a shortage listing each missing sku: the order is backordered and nothing reserved
   (`ship_complete`, the default). A channel whose policy is `ship_available` ships what is in stock
   now instead (planned by the same rules) and backorders the rest, which ships as its own shipment
   once all of it is in stock.
5. Fallback tiers (per channel): an order still backordered ``after_hours`` after it was
   backordered widens its search: a tier naming another shipping method (express → standard) or
   letting stores in lifts express's warehouses-only rule; from then on the order is sourced so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from itertools import combinations

from libs.geo import distance_km

MAX_CANDIDATES = 16  # bounds the combinations examined per order size


@dataclass(frozen=True)
class Location:
    location_id: str
    kind: str
    countries: frozenset[str]
    cost_per_shipment: Decimal
    lat: float | None = None
    lon: float | None = None
    active: bool = True


@dataclass(frozen=True)
class Destination:
    country: str
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True)
class Request:
    lines: tuple[tuple[str, int], ...]
    destination: Destination
    express: bool = False
    pickup_at: str | None = None
    """A click-and-collect order: the store it is collected at."""
    channel: str = ""

    def quantities(self) -> dict[str, int]:
        """Lines of the same sku are one need."""
        needs: dict[str, int] = {}
        for sku, quantity in self.lines:
            needs[sku] = needs.get(sku, 0) + quantity
        return needs


@dataclass(frozen=True)
class Tier:
    """A fallback tier: after ``after_hours`` of backorder, accept ``method`` and/or stores."""

    after_hours: float
    method: str | None = None
    stores: bool = False


def widen(request: Request, reached: Sequence[Tier]) -> Request:
    """The request as the fallback tiers reached so far allow: express's warehouses-only rule lifted
    by a tier that names another method or lets stores in."""
    if request.express and any(t.stores or t.method not in (None, "express") for t in reached):
        return replace(request, express=False)
    return request


def method_after(method: str, reached: Sequence[Tier]) -> str:
    """The shipping method an order ships by once these tiers were reached (the last one naming one)."""
    return next((t.method for t in reversed(reached) if t.method), method)


@dataclass(frozen=True)
class Rules:
    max_shipments: int = 3
    cost_per_km: Decimal = Decimal("0.01")
    pickup_transfer: frozenset[tuple[str, bool]] = frozenset()
    """(channel, whether its pickup orders may be sourced from a warehouse and transferred to the
    store), for the channels the policy names; the others follow ``pickup_transfer_default``."""
    pickup_transfer_default: bool = False

    ship_available: frozenset[tuple[str, bool]] = frozenset()
    """(channel, whether its policy is `ship_available`), for the channels the policy names; the
    others follow ``ship_available_default``."""
    ship_available_default: bool = False

    def transfers_pickup(self, channel: str) -> bool:
        return dict(self.pickup_transfer).get(channel, self.pickup_transfer_default)

    fallbacks: frozenset[tuple[str, tuple[Tier, ...]]] = frozenset()
    """(channel, its fallback tiers in order) for the channels the policy names; the others get
    ``fallbacks_default``."""
    fallbacks_default: tuple[Tier, ...] = ()

    def tiers(self, channel: str) -> tuple[Tier, ...]:
        return dict(self.fallbacks).get(channel, self.fallbacks_default)

    def ships_available(self, channel: str) -> bool:
        return dict(self.ship_available).get(channel, self.ship_available_default)


@dataclass(frozen=True)
class PlannedShipment:
    location_id: str
    lines: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Plan:
    shipments: tuple[PlannedShipment, ...]
    cost: Decimal


@dataclass(frozen=True)
class Missing:
    code: str
    message: str
    sku: str | None = None


@dataclass(frozen=True)
class Shortage:
    missing: tuple[Missing, ...]


@dataclass(frozen=True)
class Partial:
    """`ship_available`: ``plan`` ships what is in stock now; ``waiting`` (sku, units) are backordered."""

    plan: Plan
    waiting: tuple[tuple[str, int], ...]
    missing: tuple[Missing, ...]


def plan_available(
    request: Request, locations: list[Location], available: Availability, rules: Rules
) -> Partial | None:
    """What of the request is in stock now, planned by the usual rules, and what must wait; None
    when nothing is in stock (or what is would need too many shipments): backorder it whole."""
    candidates = [loc for loc in locations if eligible(loc, request, rules)]
    now: list[tuple[str, int]] = []
    waiting: list[tuple[str, int]] = []
    missing: list[Missing] = []
    for sku, quantity in sorted(request.quantities().items()):
        free = sum(max(0, available.get((sku, loc.location_id), 0)) for loc in candidates)
        if free > 0:
            now.append((sku, min(free, quantity)))
        if free < quantity:
            waiting.append((sku, quantity - free))
            missing.append(
                Missing("insufficient_stock", f"{sku}: {quantity - free} of {quantity} wait for stock", sku)
            )
    if not now:
        return None
    plan = plan_shipments(replace(request, lines=tuple(now)), locations, available, rules)
    return Partial(plan, tuple(waiting), tuple(missing)) if isinstance(plan, Plan) else None


Availability = Mapping[tuple[str, str], int]  # (sku, location_id) -> units free to reserve


def shipment_cost(location: Location, destination: Destination, rules: Rules) -> Decimal:
    cost = location.cost_per_shipment
    if None not in (location.lat, location.lon, destination.lat, destination.lon):
        km = distance_km(location.lat, location.lon, destination.lat, destination.lon)  # type: ignore[arg-type]
        cost += rules.cost_per_km * Decimal(str(round(km, 3)))
    return cost


def eligible(location: Location, request: Request, rules: Rules = Rules()) -> bool:
    if request.pickup_at is not None:
        return location.active and (
            location.location_id == request.pickup_at
            or (location.kind == "warehouse" and rules.transfers_pickup(request.channel))
        )
    return (
        location.active
        and request.destination.country in location.countries
        and (not request.express or location.kind == "warehouse")
    )


def _assign(
    needs: dict[str, int], combo: tuple[Location, ...], available: Availability
) -> tuple[PlannedShipment, ...] | None:
    """Cover every need from the combo's locations, or None. A sku stays whole where one location can."""
    taken: dict[str, list[tuple[str, int]]] = {loc.location_id: [] for loc in combo}
    for sku, quantity in sorted(needs.items()):
        whole = next((loc for loc in combo if available.get((sku, loc.location_id), 0) >= quantity), None)
        if whole is not None:
            taken[whole.location_id].append((sku, quantity))
            continue
        remaining = quantity
        by_stock = sorted(combo, key=lambda loc: (-available.get((sku, loc.location_id), 0), loc.location_id))
        for loc in by_stock:
            units = min(remaining, available.get((sku, loc.location_id), 0))
            if units > 0:
                taken[loc.location_id].append((sku, units))
                remaining -= units
            if remaining == 0:
                break
        if remaining:
            return None
    if any(not lines for lines in taken.values()):
        return None  # a location that ships nothing does not belong in a plan of this size
    return tuple(PlannedShipment(loc_id, tuple(lines)) for loc_id, lines in sorted(taken.items()))


def plan_shipments(
    request: Request, locations: list[Location], available: Availability, rules: Rules
) -> Plan | Shortage:
    """Fewest shipments first, then lowest cost; never plan more than is available."""
    needs = request.quantities()
    candidates = [loc for loc in locations if eligible(loc, request, rules)]
    missing = []
    for sku, quantity in sorted(needs.items()):
        free = sum(max(0, available.get((sku, loc.location_id), 0)) for loc in candidates)
        if free < quantity:
            missing.append(Missing("insufficient_stock", f"{sku}: {quantity} ordered, {free} available", sku))
    if missing:
        return Shortage(tuple(missing))

    costs = {loc.location_id: shipment_cost(loc, request.destination, rules) for loc in candidates}
    useful = [loc for loc in candidates if any(available.get((sku, loc.location_id), 0) > 0 for sku in needs)]
    useful.sort(key=lambda loc: (costs[loc.location_id], loc.location_id))
    useful = useful[:MAX_CANDIDATES]
    for size in range(1, min(rules.max_shipments, len(useful)) + 1):
        best: Plan | None = None
        for combo in combinations(useful, size):
            shipments = _assign(needs, combo, available)
            if shipments is None:
                continue
            cost = sum((costs[s.location_id] for s in shipments), Decimal(0))
            if best is None or cost < best.cost:
                best = Plan(shipments, cost)
        if best is not None:
            return best
    return Shortage(
        (
            Missing(
                "split_limit_exceeded",
                f"stock exists but would need more than {rules.max_shipments} shipments",
            ),
        )
    )


def plan_in_turn(
    requests: Sequence[Request],
    locations: list[Location],
    available: Availability,
    rules: Rules,
    partial: bool = False,
) -> list[Plan | Partial | Shortage]:
    """Plan each request in turn against what the requests before it took: together the plans never
    take more than is available. A request that cannot be covered takes nothing (it is backordered
    whole), so the units stay for the requests after it — unless ``partial`` and its channel ships
    what is available (`ship_available`): then it takes what is in stock now."""
    left = dict(available)
    outcomes: list[Plan | Partial | Shortage] = []
    for request in requests:
        outcome: Plan | Partial | Shortage = plan_shipments(request, locations, left, rules)
        if isinstance(outcome, Shortage) and partial and rules.ships_available(request.channel):
            outcome = plan_available(request, locations, left, rules) or outcome
        taken = outcome.plan if isinstance(outcome, Partial) else outcome
        if isinstance(taken, Plan):
            for shipment in taken.shipments:
                for sku, quantity in shipment.lines:
                    left[(sku, shipment.location_id)] -= quantity
        outcomes.append(outcome)
    return outcomes
