"""OpenTelemetry traces across every hop, with one trace per order.

Baton's consumers take records in batches and publish through the outbox relay, not through
faststream's publisher, so faststream's ``KafkaTelemetryMiddleware`` would only ever see a batch
and never inject a context into what Baton sends. Baton therefore propagates W3C ``traceparent``
headers itself:

- each applied record gets a span (``<service> process <topic>``), child of the record's
  ``traceparent`` header; the events the record caused carry that span's context in their
  headers, through the outbox, to the next service;
- the trace id of an order is its order id (a UUID is 128 bits, like a trace id), so input from
  systems that do not propagate a context (warehouses, carriers, support tools) still lands in the
  order's trace, and ``baton trace <order_id>`` needs no lookup;
- a record that causes events for several orders (stock arriving for backorders) gets a short
  hand-off span in each order's trace, linked to the record's span;
- database transactions (one per batch) and outbox relay rounds get their own spans, linked to
  the records they carried.

Tracing is off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (OTLP/HTTP export) or ``BATON_TRACE_DIR``
(JSON lines files read by ``baton trace``) is set; off, none of this costs anything.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from libs.platform.messaging import Incoming, Outgoing

_PROPAGATOR = TraceContextTextMapPropagator()
_MAX_LINKS = 32
_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    return _tracer is not None


def configure(service: str, instance_id: str, trace_dir: str | None) -> None:
    """Install the exporters the environment asks for; leave tracing off when it asks for none."""
    global _tracer, _provider
    exporters: list[SpanExporter] = []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if trace_dir:
        exporters.append(JsonLinesExporter(Path(trace_dir) / f"{service}.{os.getpid()}.jsonl"))
    if not exporters:
        _tracer = _provider = None
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"baton-{service}", "service.instance.id": instance_id})
    )
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    _provider = provider
    _tracer = provider.get_tracer("baton", "1")


def shutdown() -> None:
    """Flush spans still queued (a SIGTERM'd process keeps its last spans)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def order_trace_id(order_id: str) -> int | None:
    """The trace id of an order: its UUID's 128 bits (None when the key is not a UUID)."""
    try:
        value = uuid.UUID(order_id).int
    except (ValueError, AttributeError, TypeError):
        return None
    return value or None


def _order_root(trace_id: int) -> Context:
    """A remote parent standing for the order itself, so every span of the order shares its trace."""
    span_id = (trace_id >> 64) or 1
    root = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(root))


def _extract(headers: Mapping[str, str]) -> SpanContext | None:
    if "traceparent" not in headers:
        return None
    context = trace.get_current_span(_PROPAGATOR.extract(dict(headers))).get_span_context()
    return context if context.is_valid else None


def _inject(span: trace.Span, headers: dict[str, str]) -> None:
    headers.pop("tracestate", None)
    _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))


def record_span(
    service: str,
    subscription: str,
    record: Incoming,
    out: Sequence[Outgoing],
    started_ns: int,
    outcome: str,
) -> SpanContext | None:
    """Record the span of one applied record and stamp its context on the events it caused."""
    tracer = _tracer
    if tracer is None:
        return None
    incoming = _extract(record.headers)
    orders = {t for t in (order_trace_id(o.key) for o in out) if t is not None}
    if not orders and (own := order_trace_id(record.key or "")) is not None:
        orders = {own}
    links: list[Link] = []
    if len(orders) == 1:
        (order,) = orders
        if incoming is not None and incoming.trace_id == order:
            parent = trace.set_span_in_context(NonRecordingSpan(incoming))
        else:
            parent = _order_root(order)
            if incoming is not None:
                links.append(Link(incoming))
    else:
        parent = trace.set_span_in_context(NonRecordingSpan(incoming)) if incoming else Context()
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation": "process",
        "messaging.destination.name": record.topic,
        "messaging.kafka.destination.partition": record.partition,
        "messaging.kafka.message.offset": record.offset,
        "baton.service": service,
        "baton.subscription": subscription,
        "baton.outcome": outcome,
        "baton.events_out": len(out),
    }
    if record.event_type:
        attributes["baton.event_type"] = record.event_type
    if len(orders) == 1:
        attributes["baton.order_id"] = str(uuid.UUID(int=next(iter(orders))))
    span = tracer.start_span(
        f"{service} process {record.topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
        start_time=started_ns,
    )
    span.end()
    for event in out:
        target = order_trace_id(event.key)
        if len(orders) > 1 and target is not None:
            handoff = tracer.start_span(
                f"{service} hand-off {event.headers.get('event_type', '')}",
                context=_order_root(target),
                kind=SpanKind.INTERNAL,
                attributes={"baton.service": service, "baton.order_id": event.key},
                links=[Link(span.get_span_context())],
            )
            handoff.end()
            _inject(handoff, event.headers)
        else:
            _inject(span, event.headers)
    return span.get_span_context()


def batch_span(
    name: str, started_ns: int, records: int, linked: Iterable[SpanContext | None], **attributes: Any
) -> None:
    """A span for work done once per batch (a database transaction, a relay round)."""
    tracer = _tracer
    if tracer is None:
        return
    links = [Link(c) for c in linked if c is not None][:_MAX_LINKS]
    span = tracer.start_span(
        name,
        context=Context(),
        kind=SpanKind.INTERNAL,
        attributes={"baton.records": records, **attributes},
        links=links,
        start_time=started_ns,
    )
    span.end()


def contexts_of(headers_list: Iterable[Mapping[str, str]]) -> list[SpanContext | None]:
    return [_extract(h) for h in headers_list]


def now_ns() -> int:
    return time.time_ns()


class JsonLinesExporter(SpanExporter):
    """One JSON object per span in a file of this process: what ``baton trace`` reads."""

    def __init__(self, path: Path, max_bytes: int = 200 * 1024 * 1024) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._file.closed or self._file.tell() > self._max_bytes:
                return SpanExportResult.SUCCESS
            for span in spans:
                self._file.write(json.dumps(span_as_dict(span)) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def span_as_dict(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "name": span.name,
        "service": span.resource.attributes.get("service.name", ""),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in span.links
        ],
    }
