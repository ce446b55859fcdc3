"""Topic names (``<domain>.<event>.v<N>``), their partition counts and retention, in one place.

The message key is always the aggregate id, so one aggregate's events stay in order.
"""

from __future__ import annotations

from dataclasses import dataclass

ORDERS_SUBMITTED = "orders.submitted.v1"
ORDERS_REFUSED = "orders.refused.v1"
ORDERS_CANCEL_REQUESTED = "orders.cancel-requested.v1"
ORDERS_CANCELLATIONS = "orders.cancellations.v1"
ORDERS_HOLD_DECISIONS = "orders.hold-decisions.v1"
ORDERS_EDIT_REQUESTED = "orders.edit-requested.v1"
ORDERS_EDITS = "orders.edits.v1"
ORDERS_STATUS = "orders.status.v1"
CATALOG_PRODUCTS = "catalog.products.v1"
INVENTORY_LOCATIONS = "inventory.locations.v1"
INVENTORY_ADJUSTMENTS = "inventory.adjustments.v1"
FULFILLMENT_UPDATES = "fulfillment.updates.v1"
FULFILLMENT_STAGE_CHANGES = "fulfillment.stage-changes.v1"
NOTIFICATION_SUBSCRIPTIONS = "notification.subscriptions.v1"
NOTIFICATION_REDELIVERIES = "notification.redeliveries.v1"
NOTIFICATION_API_KEYS = "notification.api-keys.v1"
PAYMENTS_UPDATES = "payments.updates.v1"
FULFILLMENT_SLA_BREACHES = "fulfillment.sla-breaches.v1"
RETURNS_REQUESTED = "returns.requested.v1"
RETURNS_RECEIVED = "returns.received.v1"
RETURNS_STATUS = "returns.status.v1"
PAYMENTS_REFUND_REQUESTED = "payments.refund-requested.v1"
PRIVACY_ERASURE_REQUESTS = "privacy.erasure-requests.v1"
PRIVACY_ERASURES = "privacy.erasures.v1"

DEFAULT_REPLICATION_FACTOR = 1
"""Replicas per topic that `baton topics apply` creates, unless `BATON_TOPIC_REPLICATION_FACTOR` says
otherwise (one for a local broker; three on a production cluster)."""

SERVICES = ("intake", "validation", "allocation", "fulfillment", "notification")


def dead_letter_topic(service: str) -> str:
    return f"{service}.dead-letters.v1"


def facts_topic(service: str) -> str:
    """The order facts addressed to one service (internal, key = order id)."""
    return f"{service}.facts.v1"


WEEK_HOURS = 168
DEAD_LETTER_RETENTION_HOURS = WEEK_HOURS
"""Dead letters are kept as long as the records they came from (7 days), not longer: every
service's inputs carry personal data (orders, or an erasure request's customer id), and a dead
letter is a copy of such a record that erasure cannot reach (`libs/contracts/privacy.py`)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    key: str
    public: bool
    retention_hours: int = WEEK_HOURS
    compacted: bool = False
    """Kept by key forever (the last record of each key at least): a store any process can rebuild by
    reading the topic from its beginning, instead of a window of recent records."""

    @property
    def configs(self) -> dict[str, str]:
        """The topic's settings as `baton topics apply` creates them."""
        if self.compacted:
            return {"cleanup.policy": "compact"}
        return {"retention.ms": str(self.retention_hours * 3600 * 1000)}


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(ORDERS_SUBMITTED, 8, "<channel>:<external_id>", True),
    TopicSpec(ORDERS_REFUSED, 4, "<channel>:<external_id>", True),
    TopicSpec(ORDERS_CANCEL_REQUESTED, 4, "order id or <channel>:<external_id>", True),
    TopicSpec(ORDERS_CANCELLATIONS, 4, "order id", True),
    TopicSpec(ORDERS_HOLD_DECISIONS, 4, "order id", True),
    TopicSpec(ORDERS_EDIT_REQUESTED, 8, "order id or <channel>:<external_id>", True),
    TopicSpec(ORDERS_EDITS, 4, "order id", True),
    TopicSpec(ORDERS_STATUS, 8, "order id", True),
    TopicSpec(CATALOG_PRODUCTS, 4, "sku", True),
    TopicSpec(INVENTORY_LOCATIONS, 1, "location id", True),
    TopicSpec(INVENTORY_ADJUSTMENTS, 8, "sku", True),
    TopicSpec(FULFILLMENT_UPDATES, 8, "shipment id", True),
    TopicSpec(FULFILLMENT_STAGE_CHANGES, 8, "order id", True),
    TopicSpec(FULFILLMENT_SLA_BREACHES, 4, "order id", True),
    TopicSpec(RETURNS_REQUESTED, 4, "order id", True),
    TopicSpec(RETURNS_RECEIVED, 4, "return id", True),
    TopicSpec(RETURNS_STATUS, 4, "order id", True),
    TopicSpec(PAYMENTS_REFUND_REQUESTED, 4, "order id", True),
    TopicSpec(NOTIFICATION_SUBSCRIPTIONS, 1, "subscription id", False),
    TopicSpec(NOTIFICATION_REDELIVERIES, 1, "delivery id", False),
    TopicSpec(NOTIFICATION_API_KEYS, 1, "key id", False, compacted=True),
    TopicSpec(PAYMENTS_UPDATES, 8, "order id or <channel>:<external_id>", True),
    TopicSpec(PRIVACY_ERASURE_REQUESTS, 1, "request id", False),
    TopicSpec(PRIVACY_ERASURES, 1, "request id", False),
    *(TopicSpec(facts_topic(s), 8, "order id", False) for s in SERVICES),
    *(TopicSpec(dead_letter_topic(s), 1, "source key", False, DEAD_LETTER_RETENTION_HOURS) for s in SERVICES),
)
