"""Allocation's settings: the platform's, plus its sourcing rules (`BATON_MAX_SHIPMENTS`, `BATON_COST_PER_KM`)."""

from __future__ import annotations

from pydantic import Field

from libs.platform.settings import BatonSettings


class AllocationSettings(BatonSettings):
    max_shipments: int = Field(default=3, ge=1, description="Most shipments one order may be split into")
    cost_per_km: str = Field(default="0.01", description="Money added per km between location and customer")
