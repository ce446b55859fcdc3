"""The Kafka headers on Baton's records: their names, what they mean, their JSON Schemas.

Every event Baton publishes is also a **CloudEvent** in the Kafka protocol binding's binary mode:
the ``ce_*`` headers carry the CloudEvents attributes, ``content-type`` is the data's media type,
the record's value is the event's JSON and its key the CloudEvents ``partitionkey``. The mapping
is 1:1 with the envelope every event already carries:

=================  ==================================================================
``ce_specversion``  ``1.0``
``ce_id``           ``event_id``
``ce_source``       ``/baton/<service>``: the service that produced the event
``ce_type``         ``event_type`` as it is (``order.status-changed``)
``ce_time``         ``occurred_at``, RFC 3339 in UTC
``ce_subject``      the partition key: the order id for order events
=================  ==================================================================

``ce_type`` has no reverse-DNS prefix: ``event_type`` is already the name subscribers, webhooks and
consumers filter on, a second spelling of it would only be a thing to keep in step, and Baton owns
no domain to put in front; ``ce_source`` says which service (and so which fleet) produced it.
The older ``event_id`` and ``event_type`` headers stay: Baton's consumers and inboxes read them.
``correlation_id`` is the record's key too (the order id for every event about an order), so a
consumer that propagates no trace context can still put one order's events together.

``libs/platform/records.py`` writes these headers; the AsyncAPI document describes them from here.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from libs.contracts.envelope import Event

EVENT_ID = "event_id"
EVENT_TYPE = "event_type"
CONTENT_TYPE = "content-type"
TRACEPARENT = "traceparent"
CORRELATION_ID = "correlation_id"
REPLAYED_FROM = "dlq-replayed-from"
CE_SPECVERSION = "ce_specversion"
CE_ID = "ce_id"
CE_SOURCE = "ce_source"
CE_TYPE = "ce_type"
CE_TIME = "ce_time"
CE_SUBJECT = "ce_subject"

CLOUDEVENTS_VERSION = "1.0"
JSON = "application/json"


def cloudevents_source(service: str) -> str:
    """The CloudEvents ``source`` of what ``service`` publishes: a URI reference, ``/baton/<service>``."""
    return f"/baton/{service}"


def event_headers(event: Event, producer: str, key: str) -> dict[str, str]:
    """The headers of one published event: Baton's own and the CloudEvents binary-mode ones."""
    headers = {
        EVENT_ID: str(event.event_id),
        EVENT_TYPE: event.event_type,
        CONTENT_TYPE: JSON,
        CE_SPECVERSION: CLOUDEVENTS_VERSION,
        CE_ID: str(event.event_id),
        CE_SOURCE: cloudevents_source(producer),
        CE_TYPE: event.event_type,
        CE_TIME: event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        CORRELATION_ID: key,
    }
    if key:
        headers[CE_SUBJECT] = key
    return headers


def _text(description: str, **schema: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **schema}


TRACEPARENT_SCHEMA = _text(
    "W3C Trace Context of the span that caused the record (set when tracing is on): "
    "one order is one trace, whose id is the order id",
    pattern="^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
)
REPLAYED_FROM_SCHEMA = _text(
    "Set by `baton dlq replay` on a record sent back to its source topic: `<dead-letter topic>@<offset>`"
)

EVENT_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "Headers of every event Baton publishes. Consumers must ignore headers they do not know.",
    "properties": {
        EVENT_ID: _text("The event's `event_id`: what inboxes deduplicate on", format="uuid"),
        EVENT_TYPE: _text("The event's `event_type`: what consumers route on without parsing the body"),
        CONTENT_TYPE: _text("The value's media type (CloudEvents `datacontenttype`)", const=JSON),
        CE_SPECVERSION: _text("CloudEvents spec version", const=CLOUDEVENTS_VERSION),
        CE_ID: _text("CloudEvents `id`: the event's `event_id`", format="uuid"),
        CE_SOURCE: _text("CloudEvents `source`: `/baton/<service>`, the service that produced the event"),
        CE_TYPE: _text("CloudEvents `type`: the event's `event_type`, unprefixed"),
        CE_TIME: _text("CloudEvents `time`: the event's `occurred_at` (RFC 3339, UTC)", format="date-time"),
        CE_SUBJECT: _text(
            "CloudEvents `subject`: the record's key, the aggregate id (the order id for orders)"
        ),
        CORRELATION_ID: _text(
            "The record's key: the order id for every event about an order (`<channel>:<external_id>` "
            "for a refused submission), so one order's events go together without trace context"
        ),
        TRACEPARENT: TRACEPARENT_SCHEMA,
        REPLAYED_FROM: REPLAYED_FROM_SCHEMA,
    },
    "required": [
        EVENT_ID,
        EVENT_TYPE,
        CONTENT_TYPE,
        CE_SPECVERSION,
        CE_ID,
        CE_SOURCE,
        CE_TYPE,
        CE_TIME,
        CORRELATION_ID,
    ],
}

INPUT_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "Headers Baton reads on input from outside: none is required.",
    "properties": {TRACEPARENT: TRACEPARENT_SCHEMA, REPLAYED_FROM: REPLAYED_FROM_SCHEMA},
}

DEAD_LETTER_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "Every header of the original record (so a replay restores it exactly: a Baton event keeps "
    "its `event_*` and `ce_*` headers), plus `dlq-*` headers saying why and where from.",
    "properties": {
        "dlq-id": _text("Unique per dead letter", format="uuid"),
        "dlq-cause": _text(
            "Why: `invalid_json`, `schema_violation`, `unknown_event_type`, `stage_backwards`, "
            "`processing_failed`, `webhook_undeliverable`, ... (new causes may appear)"
        ),
        "dlq-error": _text("The error in words (at most 2,000 characters)", maxLength=2000),
        "dlq-truncated": _text("`true` when the value was cut at 512 KB", enum=["true", "false"]),
        "dlq-at": _text("When it was dead-lettered: Unix time in seconds", pattern=r"^[0-9]+(\.[0-9]+)?$"),
        "dlq-source-topic": _text("The topic the record was read from (a record only)"),
        "dlq-source-partition": _text("Its partition (a record only)", pattern="^[0-9]+$"),
        "dlq-source-offset": _text("Its offset (a record only)", pattern="^[0-9]+$"),
        "dlq-source-message-id": _text("The id the service's inbox knew it by (a record only)"),
        "dlq-delivery-id": _text("The webhook delivery that exhausted its attempts (notification only)"),
        "dlq-subscription-id": _text("That delivery's subscription (notification only)"),
    },
    "required": ["dlq-id", "dlq-cause", "dlq-error", "dlq-truncated", "dlq-at"],
}
