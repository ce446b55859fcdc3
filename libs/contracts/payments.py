"""Payment events from outside Baton: the payment provider moves an order's payment on."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from libs.contracts.envelope import Contract, Text

PaymentState = Literal["authorized", "captured", "failed", "refunded"]


class PaymentUpdate(Contract):
    """On `payments.updates.v1` (key = order id, or `<channel>:<external_id>`): an order's payment moved.

    Name the order by ``order_id`` or by ``channel`` + ``external_id``. An order submitted with
    payment `pending` has its stock reserved until the channel's reservation deadline; `authorized`
    or `captured` before then sends it to fulfillment, `failed` or `refunded` cancels it, and the
    deadline passing cancels it with reason `payment_timeout`. Idempotent per ``payment_event_id``.
    """

    payment_event_id: Text = Field(
        min_length=1, max_length=200, description="The provider's id of this event; repeats change nothing"
    )
    order_id: UUID | None = None
    channel: Text | None = Field(default=None, max_length=64)
    external_id: Text | None = Field(default=None, max_length=200)
    status: PaymentState = Field(description="What happened to the payment")
    reference: Text | None = Field(default=None, max_length=200, description="The provider's reference")
    occurred_at: AwareDatetime
