"""Inventory events from operations and warehouses; allocation owns the resulting stock."""

from __future__ import annotations

from pydantic import Field, model_validator

from libs.contracts.envelope import Contract, Money, Text
from libs.contracts.vocabulary import LocationKind


class LocationUpdated(Contract):
    """On `inventory.locations.v1`, key = location id. The latest message per location wins."""

    location_id: Text = Field(min_length=1, max_length=100)
    name: Text = Field(max_length=300)
    kind: LocationKind
    lat: float | None = None
    lon: float | None = None
    countries: list[Text] = Field(min_length=1, description="ISO-3166 alpha-2 codes this location ships to")
    cost_per_shipment: Money
    active: bool = True


class StockAdjusted(Contract):
    """On `inventory.adjustments.v1`, key = sku. Applied exactly once per ``adjustment_id``.

    Either ``delta`` (received +, lost -) or ``on_hand`` (a stock count that replaces the figure).
    """

    adjustment_id: Text = Field(min_length=1, max_length=200)
    sku: Text = Field(min_length=1, max_length=100)
    location_id: Text = Field(min_length=1, max_length=100)
    delta: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    on_hand: int | None = Field(default=None, ge=0, le=100_000_000)
    reason: Text = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _one_of_delta_or_count(self) -> StockAdjusted:
        if (self.delta is None) == (self.on_hand is None):
            raise ValueError("exactly one of `delta` or `on_hand` is required")
        return self
