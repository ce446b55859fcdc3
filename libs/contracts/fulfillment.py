"""Fulfillment events: progress reported by warehouses and carriers, and the public stage events."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from libs.contracts.envelope import Contract, Event, Text


class FulfillmentUpdate(Contract):
    """On `fulfillment.updates.v1` (key = shipment id): a shipment reached ``stage``.

    Stages only move forward (skipping is fine); the stage `failed` means the location cannot
    fulfil it (``note`` says why, e.g. `damaged`, `not_found`). A repeated ``update_id`` changes nothing.
    """

    shipment_id: Text = Field(min_length=1, max_length=200)
    update_id: Text = Field(min_length=1, max_length=200)
    stage: Text = Field(min_length=1, max_length=64)
    occurred_at: AwareDatetime
    carrier: Text | None = Field(default=None, max_length=100)
    tracking_number: Text | None = Field(default=None, max_length=200)
    note: Text | None = Field(default=None, max_length=2000)


class StageChanged(Event):
    """On `fulfillment.stage-changes.v1` (key = order id): a shipment entered, moved or left a pipeline.

    Entering: ``left_stage`` is null. Leaving (last stage reached, or cancelled): ``entered_stage``
    is null, or the last stage.
    """

    event_type: Literal["fulfillment.stage-changed"] = "fulfillment.stage-changed"
    order_id: UUID
    shipment_id: Text
    pipeline: Text
    left_stage: Text | None
    entered_stage: Text | None
    change: Literal["entered", "moved", "left"]
    reason: Text | None = None

    def partition_key(self) -> str:
        return str(self.order_id)
