"""Stock per sku and location as allocation reasons about it. Pure: plain data in, plain data out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.allocation.domain.sourcing import Availability


@dataclass(frozen=True)
class StockLevel:
    """Units of one sku at one location: on hand, and how many of those are promised to orders."""

    sku: str
    location_id: str
    on_hand: int
    reserved: int

    @property
    def free(self) -> int:
        return self.on_hand - self.reserved


def available(levels: Iterable[StockLevel]) -> Availability:
    """What sourcing may plan with: per (sku, location), the units on hand that nobody reserved."""
    return {(level.sku, level.location_id): level.free for level in levels}


@dataclass(frozen=True)
class Adjustment:
    """A stock change as applied: what it changed (``delta``, also for a count) and the figure after."""

    adjustment_id: str
    sku: str
    location_id: str
    delta: int
    on_hand_after: int
    reason: str


@dataclass(frozen=True)
class BelowReserved:
    """An adjustment refused: it would leave fewer units on hand than are promised to orders."""

    message: str


def adjust(
    level: StockLevel, adjustment_id: str, *, delta: int | None, count: int | None, reason: str
) -> Adjustment | BelowReserved:
    """A delta (received +, lost -) or a count that replaces the figure; never fewer units on hand
    than are reserved (units promised to an order are taken back by cancelling it, not by a count)."""
    on_hand = count if count is not None else level.on_hand + (delta or 0)
    if on_hand < level.reserved:
        return BelowReserved(
            f"{level.sku}@{level.location_id}: on hand would be {on_hand}, {level.reserved} reserved"
        )
    return Adjustment(adjustment_id, level.sku, level.location_id, on_hand - level.on_hand, on_hand, reason)
