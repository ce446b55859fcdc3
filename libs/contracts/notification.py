"""Commands to the notification service, sent by operators through `baton webhooks` and `baton api-keys`."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AwareDatetime, Field, model_validator

from libs.contracts.envelope import Contract, Text, utcnow

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
"""What `OrderDetails.channel` allows."""


class WebhookSubscriptionChanged(Contract):
    """On `notification.subscriptions.v1` (key = subscription id): add, remove, rotate a secret.

    `add` adds or replaces a webhook subscription, `remove` stops it, `rotate_secret` (added
    within v1) gives it a new signing secret.

    ``events`` are order statuses (`order.shipped`) and stage events (`stage.entered:packed`,
    `stage.left:delivered`); `*` means every event.

    The signing secret never travels in clear: `baton webhooks add` and `rotate-secret` generate
    it, show it once to the operator, and send it sealed with the key both the operator and
    notification hold (`BATON_WEBHOOK_SECRETS_KEY`). A command notification cannot accept is
    dead-lettered with its cause: `webhook_url_refused` (the egress guard refused the url),
    `webhook_secret_refused`, `unknown_subscription` (rotating a subscription that does not exist).
    """

    action: Literal["add", "remove", "rotate_secret"] = Field(
        description="`add` (or replace), `remove`, or `rotate_secret` (new in v1, additive)"
    )
    subscription_id: Text = Field(min_length=1, max_length=100)
    url: Text | None = Field(
        default=None,
        max_length=2000,
        description="`add`: https on a public host, unless notification's egress settings allow more",
    )
    secret: Text | None = Field(
        default=None,
        max_length=200,
        description="Deprecated and refused: a command with a clear secret is dead-lettered "
        "(`webhook_secret_refused`); send `secret_ciphertext`",
    )
    secret_ciphertext: Text | None = Field(
        default=None,
        max_length=1000,
        description="`add` and `rotate_secret`: the signing secret (`whsec_` and the base64 of 24 to 64 "
        "random bytes, Standard Webhooks) sealed as a Fernet token with `BATON_WEBHOOK_SECRETS_KEY`",
    )
    grace_hours: float = Field(
        default=0.0,
        ge=0,
        le=720,
        description="`rotate_secret`: hours after `sent_at` during which the replaced secret stays "
        "valid; deliveries carry a signature with each secret meanwhile",
    )
    events: list[Text] = Field(default_factory=list)
    sent_at: AwareDatetime = Field(
        default_factory=utcnow,
        description="When the operator sent the command (UTC; new in v1, additive): a rotation's grace "
        "window starts here. Missing: when notification applies it",
    )


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
    role: Literal["viewer", "operator"] = Field(
        default="viewer",
        description="What the key may do on the fulfillment board (new in v1, additive): `viewer` reads,"
        " `operator` also acts (moves shipments, decides held orders, cancels, redelivers webhooks)."
        " Missing: `viewer`, what every key could do before",
    )

    @model_validator(mode="after")
    def _adding_needs_a_digest_and_channels(self) -> ApiKeyChanged:
        if self.action == "add" and (self.key_hash is None or not self.channels):
            raise ValueError("adding a key needs `key_hash` and at least one channel (or `*`)")
        if bad := [c for c in self.channels if c != "*" and not CHANNEL_NAME.fullmatch(c)]:
            raise ValueError(f"not channel names: {bad[:5]}")
        return self
