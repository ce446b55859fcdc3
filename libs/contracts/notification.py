"""Commands to the notification service, sent by operators through `baton webhooks`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from libs.contracts.envelope import Contract, Text


class WebhookSubscriptionChanged(Contract):
    """On `notification.subscriptions.v1` (key = subscription id): add or remove a webhook subscription.

    ``events`` are order statuses (`order.shipped`) and stage events (`stage.entered:packed`,
    `stage.left:delivered`); `*` means every event.
    """

    action: Literal["add", "remove"]
    subscription_id: Text = Field(min_length=1, max_length=100)
    url: Text | None = Field(default=None, max_length=2000)
    secret: Text | None = Field(
        default=None,
        min_length=8,
        max_length=200,
        description="`whsec_<base64>` (Standard Webhooks) or any string",
    )
    events: list[Text] = Field(default_factory=list)


class RedeliveryRequested(Contract):
    """On `notification.redeliveries.v1`: send a dead-lettered delivery (or all of a subscription's) again."""

    delivery_id: Text | None = None
    subscription_id: Text | None = None
