"""Commands to the notification service, sent by operators through `baton webhooks` and `baton api-keys`."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from libs.contracts.envelope import Contract, Text

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
"""What `OrderDetails.channel` allows."""


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


class ApiKeyChanged(Contract):
    """On `notification.api-keys.v1` (key = key id): add or revoke a key of the status API.

    It carries the key's SHA-256 digest, never the key: `baton api-keys add` prints the key once and
    sends only the digest. A key reads the orders of its ``channels``; `*` means every channel (for
    support tools). Revoking is for good: a key id once added is never active again after a revoke.
    """

    action: Literal["add", "revoke"]
    key_id: Text = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
    name: Text = Field(default="", max_length=200, description="Who or what uses the key, for people")
    key_hash: Text | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the key, lower-case hex (with `add`)"
    )
    channels: list[Text] = Field(
        default_factory=list,
        max_length=100,
        description="The channels whose orders the key may read, or `*` for all (with `add`)",
    )

    @model_validator(mode="after")
    def _adding_needs_a_digest_and_channels(self) -> ApiKeyChanged:
        if self.action == "add" and (self.key_hash is None or not self.channels):
            raise ValueError("adding a key needs `key_hash` and at least one channel (or `*`)")
        if bad := [c for c in self.channels if c != "*" and not CHANNEL_NAME.fullmatch(c)]:
            raise ValueError(f"not channel names: {bad[:5]}")
        return self
