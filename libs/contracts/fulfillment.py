"""Fulfillment events: progress reported by warehouses and carriers, and the public stage events."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from libs.contracts.envelope import Contract, Event


class FulfillmentUpdate(Contract):
    """On `fulfillment.updates.v1` (key = shipment id): a shipment reached ``stage``.

    Stages only move forward (skipping is fine); the stage `failed` means the location cannot
    fulfil it (``note`` says why, e.g. `damaged`, `not_found`). A repeated ``update_id`` changes nothing.
    """

    shipment_id: str = Field(min_length=1, max_length=200)
    update_id: str = Field(min_length=1, max_length=200)
    stage: str = Field(min_length=1, max_length=64)
    occurred_at: AwareDatetime
    carrier: str | None = Field(default=None, max_length=100)
    tracking_number: str | None = Field(default=None, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


class StageChanged(Event):
    """On `fulfillment.stage-changes.v1` (key = order id): a shipment entered, moved or left a pipeline.

    Entering: ``left_stage`` is null. Leaving (last stage reached, or cancelled): ``entered_stage``
    is null, or the last stage.
    """

    event_type: Literal["fulfillment.stage-changed"] = "fulfillment.stage-changed"
    order_id: UUID
    shipment_id: str
    pipeline: str
    left_stage: str | None
    entered_stage: str | None
    change: Literal["entered", "moved", "left"]
    reason: str | None = None

    def partition_key(self) -> str:
        return str(self.order_id)
