"""Fulfillment events: progress reported by warehouses and carriers, and the public stage events."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, model_validator

from libs.contracts.envelope import Contract, Event, Text
from libs.contracts.vocabulary import CarrierException

EXCEPTION_STAGE = "exception"
"""The stage a carrier reports, with ``exception``, for a parcel in transit that will not arrive."""


class FulfillmentUpdate(Contract):
    """On `fulfillment.updates.v1` (key = shipment id): a shipment reached ``stage``.

    Stages only move forward (skipping is fine); the stage `failed` means the location cannot
    fulfil it (``note`` says why, e.g. `damaged`, `not_found`). A repeated ``update_id`` changes nothing.

    Added in schema version 1 (additive): a carrier's ``eta`` replaces Baton's estimate for the
    shipment from then on. It may come with a move, or alone with the stage the shipment is in
    (the one update that may name the current stage); either way the order's status is
    re-published with the new ETA. After the parcel shipped, the stage `exception` with
    ``exception`` (`lost`, `damaged`, `returned_to_sender`) takes it out of its pipeline: its units
    are written off, and the channel's `in_transit_exception` policy re-ships them (a new shipment,
    sourced again) or asks payments to refund them.
    """

    shipment_id: Text = Field(min_length=1, max_length=200)
    update_id: Text = Field(min_length=1, max_length=200)
    stage: Text = Field(min_length=1, max_length=64)
    occurred_at: AwareDatetime
    carrier: Text | None = Field(default=None, max_length=100)
    tracking_number: Text | None = Field(default=None, max_length=200)
    note: Text | None = Field(default=None, max_length=2000)
    eta: AwareDatetime | None = Field(
        default=None, description="The carrier's expected delivery; replaces Baton's estimate"
    )
    exception: CarrierException | None = Field(
        default=None, description="With stage `exception`: what happened to the parcel in transit"
    )

    @model_validator(mode="after")
    def _exception_with_its_stage(self) -> FulfillmentUpdate:
        if (self.stage == EXCEPTION_STAGE) != (self.exception is not None):
            raise ValueError(f"stage `{EXCEPTION_STAGE}` and `exception` go together: give both or neither")
        return self


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
