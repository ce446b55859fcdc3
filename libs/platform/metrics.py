"""Prometheus metrics of a Baton process, and counters that count only what committed.

Domain counters are incremented by handlers while a batch transaction is open; they are held back
and applied only when that transaction commits, so a rolled-back or redelivered batch is never
counted twice. Every metric Baton exports is declared here: the Grafana dashboard, the alert rules
and their tests read this one catalog.

Baton's own registry also carries the standard process (``process_*``: CPU, memory, file
descriptors, start time) and Python (``python_info``, ``python_gc_*``) collectors, so the usual
dashboards and alerts for any Prometheus target work on a Baton process too. No ``*_created``
series are exported: they double the series count of every counter and histogram, and Prometheus
needs them only for created-timestamp ingestion, which Baton does not rely on.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

REGISTRY = CollectorRegistry(auto_describe=True)
for _standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_standard)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)

# platform: every service
RECORDS = Counter(
    "baton_records",
    "Records taken from Kafka by outcome (applied, duplicate, dead_lettered)",
    ["service", "subscription", "outcome"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "baton_batch_seconds",
    "Time to apply one batch in one database transaction",
    ["service", "subscription"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "baton_dead_letters", "Records dead-lettered, by cause", ["service", "cause"], registry=REGISTRY
)
OUTBOX_PENDING = Gauge(
    "baton_outbox_pending_rows",
    "Committed events not yet acknowledged by Kafka",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_OLDEST = Gauge(
    "baton_outbox_oldest_seconds",
    "Age of the oldest event waiting in the outbox",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_RELAYED = Counter(
    "baton_outbox_relayed", "Events relayed from the outbox to Kafka", ["service"], registry=REGISTRY
)
CONSUMER_LAG = Gauge(
    "baton_consumer_lag",
    "Records on the service's input topics not yet committed by its consumer group",
    ["service", "group", "topic"],
    registry=REGISTRY,
)
READY = Gauge("baton_ready", "1 when connected to Kafka and PostgreSQL", ["service"], registry=REGISTRY)

# domain
ORDER_STATUS = Counter(
    "baton_order_status", "Status changes published, by status", ["status"], registry=REGISTRY
)
STATUS_LATENCY = Histogram(
    "baton_order_status_latency_seconds",
    "Time from an order's receipt to reaching a status",
    ["status"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
VALIDATION_DECISIONS = Counter(
    "baton_validation_decisions",
    "Validation outcomes (validated, rejected, held)",
    ["decision"],
    registry=REGISTRY,
)
VALIDATION_RULE_ERRORS = Counter(
    "baton_validation_rule_errors",
    "Plugin validation rules that raised or returned an undeclared code (the order was held)",
    ["rule"],
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "baton_validation_rejections",
    "Failed validation rules (one order can fail several)",
    ["reason"],
    registry=REGISTRY,
)
RESERVATIONS = Counter(
    "baton_reservations",
    "Orders allocated (stock reserved) and backordered",
    ["outcome"],
    registry=REGISTRY,
)
RESERVED_UNITS = Counter("baton_reserved_units", "Units of stock reserved", registry=REGISTRY)
STAGE_CHANGES = Counter(
    "baton_stage_changes",
    "Fulfillment stage changes by pipeline, stage and change (entered, moved, left)",
    ["pipeline", "stage", "change"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "baton_webhook_attempts",
    "Webhook delivery attempts by outcome (delivered, retry, dead)",
    ["outcome"],
    registry=REGISTRY,
)
TIMERS_FIRED = Counter(
    "baton_timers_fired",
    "Durable timers fired (each once), by service and kind",
    ["service", "kind"],
    registry=REGISTRY,
)
SLA_BREACHES = Counter(
    "baton_sla_breaches",
    "Shipments that stayed in a stage longer than its sla_hours, by pipeline and stage",
    ["pipeline", "stage"],
    registry=REGISTRY,
)
RETURNS = Counter(
    "baton_returns",
    "Returns (RMA) by outcome (authorized, refused, received)",
    ["outcome"],
    registry=REGISTRY,
)
RETURNED_UNITS = Counter(
    "baton_returned_units",
    "Units received on returns by condition (resellable: restocked, damaged: written off)",
    ["condition"],
    registry=REGISTRY,
)
EMAILS = Counter("baton_emails", "Customer e-mails by outcome (sent, failed)", ["outcome"], registry=REGISTRY)

_pending: contextvars.ContextVar[list[tuple[Counter | Histogram, tuple[str, ...], float]] | None] = (
    contextvars.ContextVar("baton_pending_metrics", default=None)
)


def count(metric: Counter, *labels: str, amount: float = 1) -> None:
    """Increment once the surrounding batch transaction commits (at once outside one)."""
    pending = _pending.get()
    if pending is None:
        (metric.labels(*labels) if labels else metric).inc(amount)
    else:
        pending.append((metric, labels, amount))


def observe(metric: Histogram, *labels: str, value: float) -> None:
    pending = _pending.get()
    if pending is None:
        metric.labels(*labels).observe(value)
    else:
        pending.append((metric, labels, value))


@contextmanager
def held_until_commit() -> Iterator[list[tuple[Counter | Histogram, tuple[str, ...], float]]]:
    """Collect counts made inside; the caller applies them with ``apply`` after the commit."""
    pending: list[tuple[Counter | Histogram, tuple[str, ...], float]] = []
    token = _pending.set(pending)
    try:
        yield pending
    finally:
        _pending.reset(token)


def apply(pending: list[tuple[Counter | Histogram, tuple[str, ...], float]]) -> None:
    for metric, labels, amount in pending:
        target = metric.labels(*labels) if labels else metric
        if isinstance(target, Histogram):
            target.observe(amount)
        else:
            target.inc(amount)


_SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
}


def metric_names() -> set[str]:
    """Every sample name Baton's registry can expose, also of metrics that have no labelled child
    yet (for the tests of the dashboard and the alert rules)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SAMPLE_SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
