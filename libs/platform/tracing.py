"""OpenTelemetry traces across every hop, with one trace per order, kept or dropped whole.

Baton's consumers take records in batches and publish through the outbox relay, not through
faststream's publisher, so faststream's ``KafkaTelemetryMiddleware`` would only ever see a batch
and never inject a context into what Baton sends. Baton therefore propagates W3C ``traceparent``
headers itself:

- **One trace per order.** The trace id of an order is a hash of its id (BLAKE2b of the UUID's
  bytes, 128 bits): every service computes it on its own, input from systems that propagate no
  context (warehouses, carriers, support tools) still lands in the order's trace, and
  ``baton trace <order_id>`` needs no lookup. The hash makes the bits uniform, which a sampler
  reading part of the trace id needs (a UUID's own bits are not: its variant bits sit where
  ``TraceIdRatioBased`` looks).
- **Sampled whole.** The sampler is the SDK's, from ``OTEL_TRACES_SAMPLER`` /
  ``OTEL_TRACES_SAMPLER_ARG`` (default ``parentbased_always_on``). Every service asks it about
  the order's trace id with no parent, and the order's root (a remote parent standing for the
  order itself) carries that decision as its sampled flag; the built-in samplers decide the
  root by the trace id alone, so all services keep or drop the same orders, span for span.
  Under a span that is not sampled the instrumentations are suppressed: the spans they would
  make are dropped anyway.
- **Process spans** (``process <topic>``, CONSUMER): one per applied record, child of its
  ``traceparent`` header when that is in the order's trace, else of the order's root (the header
  then becomes a link). It is started before the handler runs and is the current span while a
  record handler (or a batch handler given one record) runs, so log lines and database spans
  made meanwhile belong to it. A batch handler given several records runs with the transaction
  span current: one call serves many orders, so no one record's span can be current; each
  record still has its own span, started before the call and ended after it, and the two are
  linked both ways. A record whose order shows only in what it causes (a channel's submission,
  a warehouse update keyed by shipment) gets its span after the handler, when the order is known.
- **Creation context.** The events a record causes carry its process span's context to the next
  service, through the outbox, so the tree reads intake → validation → allocation → fulfillment
  → notification. A record causing events for other orders (stock arriving for backorders) gets
  a ``create <topic>`` span in each such order's trace, linked to its process span.
- **Relay send spans** (``send``, PRODUCER): one per relay round, linked to the creation context
  of every record it sent (messaging conventions: a batch "send" links to each message's
  creation context and leaves the context in the message as it is). One per record would double
  the spans of every order (about 25 records, ~30 µs of CPU each sampled: ~0.8 ms per order, a
  fifth of what the fleet spends on one) for no new fact but the relay's delay, which the
  ``baton_outbox_*`` metrics already show.
- **Client spans**: PostgreSQL queries (``opentelemetry-instrumentation-asyncpg``) and webhook
  POSTs (``opentelemetry-instrumentation-aiohttp-client``, the URL cut to its origin: webhook
  paths often hold tokens) are traced by the maintained instrumentations, installed only while
  tracing is on; e-mails by a span around each SMTP send (``client_call``). A client call made
  outside any traced work (the relay polling an empty outbox, a readiness probe) is not traced.

Attributes follow the OpenTelemetry messaging conventions for Kafka (``messaging.operation.type``,
``messaging.destination.partition.id``, ``messaging.kafka.offset``,
``messaging.consumer.group.name``, ``messaging.message.id``, ...); the instrumentations are asked
for the stable database and HTTP conventions (``OTEL_SEMCONV_STABILITY_OPT_IN=database,http``
unless set).

Tracing is off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (OTLP/HTTP export) or ``BATON_TRACE_DIR``
(JSON lines files read by ``baton trace``) is set; off, nothing is instrumented and no span is made.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextvars import Token
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from libs.platform.logs import current_order_id
from libs.platform.records import CORRELATION_ID_HEADER, Incoming, Outgoing

_PROPAGATOR = TraceContextTextMapPropagator()
_MAX_LINKS = 128
"""The SDK's default limit of links per span: a batch span links to at most this many records."""
_ORDER_HASH_PERSON = b"baton.order"
"""Personalises the hash, so an order's trace id is not the hash of its bytes any tool would compute."""
_QUEUED_SPANS = 16_384
"""Spans waiting for export before new ones are dropped (the SDK's default, 2,048, is a few hundred
orders' worth with database spans at full sampling)."""
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None
_sampler: sampling.Sampler | None = None


def enabled() -> bool:
    return _tracer is not None


def configure(
    service: str, instance_id: str, trace_dir: str | None, processors: Sequence[SpanProcessor] = ()
) -> None:
    """Install the exporters the environment asks for (``processors``: more, for tests) and the
    instrumentations; leave tracing off, and nothing instrumented, when none is asked for."""
    global _tracer, _provider, _sampler
    shutdown()
    chosen: list[SpanExporter] = []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        chosen.append(OTLPSpanExporter())
    if trace_dir:
        chosen.append(JsonLinesExporter(Path(trace_dir) / f"{service}.{os.getpid()}.jsonl"))
    if not chosen and not processors:
        return
    configured = sampling._get_from_env_or_default()  # the SDK's reading of OTEL_TRACES_SAMPLER(_ARG)
    provider = TracerProvider(
        sampler=ClientCallsInsideWork(configured),
        resource=Resource.create({"service.name": f"baton-{service}", "service.instance.id": instance_id}),
        shutdown_on_exit=False,
    )
    for exporter in chosen:
        provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=500, max_queue_size=_QUEUED_SPANS)
        )
    for processor in processors:
        provider.add_span_processor(processor)
    _provider, _sampler = provider, configured
    _tracer = provider.get_tracer("baton", "2")
    _instrument(provider)


def shutdown() -> None:
    """Flush spans still queued (a SIGTERM'd process keeps its last spans) and uninstrument."""
    global _tracer, _provider, _sampler
    if _provider is not None:
        _uninstrument()
        _provider.shutdown()
    _tracer = _provider = _sampler = None


def _instrument(provider: TracerProvider) -> None:
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "database,http")
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    AioHttpClientInstrumentor().instrument(tracer_provider=provider, url_filter=_origin)


def _uninstrument() -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    AioHttpClientInstrumentor().uninstrument()


def _origin(url: Any) -> str:
    """Scheme, host and port only: a webhook's path or query may be its credential."""
    return str(url.origin())


class ClientCallsInsideWork(sampling.Sampler):
    """The configured sampler, except that a client call (a query, an HTTP request) with no span
    around it is dropped: the relay polling an empty outbox or a readiness probe would otherwise
    make a one-span trace every second."""

    def __init__(self, configured: sampling.Sampler) -> None:
        self._configured = configured

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> sampling.SamplingResult:
        if kind is SpanKind.CLIENT and not trace.get_current_span(parent_context).get_span_context().is_valid:
            return sampling.SamplingResult(sampling.Decision.DROP)
        return self._configured.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"ClientCallsInsideWork{{{self._configured.get_description()}}}"


# Orders and their traces


@functools.lru_cache(maxsize=8192)
def _canonical(order_id: str) -> str | None:
    """The order id in its canonical form; None when it is not a UUID."""
    try:
        return str(uuid.UUID(order_id))
    except (ValueError, AttributeError, TypeError):
        return None


@functools.lru_cache(maxsize=8192)
def _order_ids(order_id: str) -> tuple[int, int] | None:
    """An order's trace id and its root's span id; None when the order id is not a UUID."""
    try:
        value = uuid.UUID(order_id)
    except (ValueError, AttributeError, TypeError):
        return None
    digest = hashlib.blake2b(value.bytes, digest_size=24, person=_ORDER_HASH_PERSON).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:], "big") or 1


def order_trace_id(order_id: str) -> int | None:
    """The trace id of an order: 128 bits of a keyed hash of its UUID (None when not a UUID)."""
    ids = _order_ids(order_id)
    return ids[0] if ids is not None else None


def order_id_of(record: Incoming) -> str | None:
    """The order a record says it is about before it is applied: its ``correlation_id`` header, or
    the key of a Baton event (they are keyed by their order) from a producer without that header."""
    named = record.headers.get(CORRELATION_ID_HEADER)
    if named is None and "event_id" in record.headers:
        named = record.key
    return _canonical(named) if named else None


def _order_of_event(event: Outgoing) -> str | None:
    named = event.headers.get(CORRELATION_ID_HEADER)
    return _canonical(named) if named else None


def _order_root(order_id: str) -> SpanContext | None:
    """A remote parent standing for the order, sampled as the configured sampler decides for its
    trace id: every service decides the same for the same order."""
    ids = _order_ids(order_id)
    if ids is None:
        return None
    trace_id, span_id = ids
    decision = _sampler.should_sample(Context(), trace_id, "order").decision if _sampler else None
    sampled = decision is sampling.Decision.RECORD_AND_SAMPLE
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


@contextlib.contextmanager
def in_order(order_id: str | None) -> Iterator[None]:
    """Work for one order outside a record (a webhook POST, an e-mail): spans started inside join
    the order's trace, log lines name the order."""
    canonical = _canonical(order_id) if order_id else None
    if canonical is None:
        yield
        return
    named = current_order_id.set(canonical)
    root = _order_root(canonical) if _tracer is not None else None
    attached = otel_context.attach(_context_of(NonRecordingSpan(root))) if root else None
    try:
        yield
    finally:
        if attached is not None:
            otel_context.detach(attached)
        current_order_id.reset(named)


@contextlib.contextmanager
def client_call(name: str, order_id: str | None, attributes: Mapping[str, Any]) -> Iterator[None]:
    """A CLIENT span around a call no maintained instrumentation covers (an SMTP send), in the
    order's trace; an exception marks it failed and goes on."""
    tracer = _tracer
    if tracer is None:
        yield
        return
    with in_order(order_id):
        if otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY):  # in a trace that is not sampled
            yield
            return
        with _running(tracer.start_span(name, kind=SpanKind.CLIENT, attributes=dict(attributes))):
            yield


def fail(error_type: str) -> None:
    """Mark the current span failed (an error returned rather than raised). No message: a server's
    refusal may quote an address."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR))


# Header propagation


def _extract(headers: Mapping[str, str]) -> SpanContext | None:
    if "traceparent" not in headers:
        return None
    found = trace.get_current_span(_PROPAGATOR.extract(dict(headers))).get_span_context()
    return found if found.is_valid else None


def _inject(span: trace.Span, headers: dict[str, str]) -> None:
    headers.pop("tracestate", None)
    _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))


def _within(parent: SpanContext | None) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else Context()


def _context_of(span: trace.Span) -> Context:
    """The current context with ``span`` current. Under a span that is not sampled, instrumentations
    are suppressed: the spans they would make are dropped anyway, and a database call then costs
    what it costs with tracing off."""
    sampled = span.is_recording() or span.get_span_context().trace_flags.sampled
    return otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, not sampled, trace.set_span_in_context(span))


@contextlib.contextmanager
def _running(span: trace.Span) -> Iterator[trace.Span]:
    """``span`` current until it ends; an exception marks it failed (by type only: an exception's
    message may quote data) and goes on."""
    attached = otel_context.attach(_context_of(span))
    try:
        yield span
    except BaseException as exc:
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR))
        raise
    finally:
        otel_context.detach(attached)
        span.end()


# Batches and records


def transaction(service: str, input_name: str, records: int) -> contextlib.AbstractContextManager[Any]:
    """The span of one database transaction (a batch of records), current while it runs."""
    tracer = _tracer
    if tracer is None:
        return _NOTHING
    return _running(
        tracer.start_span(
            f"{service} transaction {input_name}",
            kind=SpanKind.INTERNAL,
            attributes={
                "db.system.name": "postgresql",
                "baton.service": service,
                "baton.subscription": input_name,
                "baton.records": records,
            },
        )
    )


@dataclass
class _Handled:
    span: trace.Span | None
    order_id: str | None
    started_ns: int
    ended_ns: int = 0


class RecordSpans:
    """The process spans of the records of one transaction (see the module's docstring).

    ``handling(records)`` wraps each handler call; ``finish(record, caused, outcome)`` ends a
    record's span once its outcome is known and stamps its context on the events it caused.
    As a context manager it ends the spans of a transaction that failed, marked failed. Tracing
    off, it only names the order of a record being handled in log lines. A span's
    ``messaging.message.id`` is the id the inbox knows the record by: its ``event_id`` only on a
    topic Baton alone writes (``trust_event_id``), its position anywhere else."""

    def __init__(
        self, service: str, input_name: str, group: str | None = None, *, trust_event_id: bool = False
    ) -> None:
        self._tracer = _tracer
        self._service = service
        self._input = input_name
        self._group = group
        self._trust_event_id = trust_event_id
        self._batch: trace.Span | None = None
        self._linked = 0
        self._handled: dict[int, _Handled] = {}
        if self._tracer is not None:
            current = trace.get_current_span()
            self._batch = current if current.is_recording() else None

    def __enter__(self) -> RecordSpans:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any) -> None:
        if kind is None:
            return
        for handled in self._handled.values():
            if handled.span is not None:
                handled.span.set_attribute("error.type", kind.__qualname__)
                handled.span.set_status(Status(StatusCode.ERROR, "the transaction failed"))
                handled.span.end()
        self._handled.clear()

    def handling(self, records: Sequence[Incoming]) -> _Handling:
        """Around one handler call: the records' spans start; one record's span is current."""
        return _Handling(self, records)

    def _begin(self, records: Sequence[Incoming], order: str | None) -> trace.Span | None:
        """Start the spans of the records whose order is known; the single record's span, if any."""
        now = time.time_ns()
        single = len(records) == 1
        for record in records:
            of = order if single else order_id_of(record)
            span = self._start(record, of, now) if of is not None else None
            self._handled[id(record)] = _Handled(span, of, now)
        return self._handled[id(records[0])].span if single else None

    def _handled_until(self, records: Sequence[Incoming]) -> None:
        now = time.time_ns()
        for record in records:
            self._handled[id(record)].ended_ns = now

    def finish(
        self, record: Incoming, caused: Sequence[Outgoing], outcome: str, cause: str | None = None
    ) -> None:
        """End the record's span with its outcome; its events carry the span's context (or, for
        events of another order, the context of a ``create`` span in that order's trace)."""
        if self._tracer is None:
            return
        handled = self._handled.pop(id(record), None)
        now = time.time_ns()
        if handled is None:  # never handed to a handler (unreadable): it took no time of its own
            handled = _Handled(None, None, now, now)
        span = handled.span
        own = handled.order_id
        if span is None:  # the order shows in what the record caused, if anywhere
            own = order_id_of(record)
            if own is None:
                orders = {o for o in map(_order_of_event, caused) if o is not None}
                own = orders.pop() if len(orders) == 1 else None
            span = self._start(record, own, handled.started_ns)
        for event in caused:
            target = _order_of_event(event)
            if target is not None and target != own:
                _inject(self._create(event, target, span.get_span_context()), event.headers)
            else:
                _inject(span, event.headers)
        span.set_attributes({"baton.outcome": outcome, "baton.events_out": len(caused)})
        if cause is not None:
            span.set_attribute("error.type", cause)
            span.set_status(Status(StatusCode.ERROR, cause))
        span.end(end_time=handled.ended_ns or now)
        if (
            self._batch is not None
            and self._linked < _MAX_LINKS
            and span.get_span_context().trace_flags.sampled
        ):
            self._batch.add_link(span.get_span_context())
            self._linked += 1

    def _start(self, record: Incoming, order: str | None, started_ns: int) -> trace.Span:
        assert self._tracer is not None
        incoming = _extract(record.headers)
        root = _order_root(order) if order is not None else None
        links = [Link(self._batch.get_span_context())] if self._batch is not None else []
        if root is None or (incoming is not None and incoming.trace_id == root.trace_id):
            parent = incoming
        else:
            parent = root
            if incoming is not None:
                links.append(Link(incoming))
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.message.id": record.message_id(trust_event_id=self._trust_event_id),
            "baton.service": self._service,
            "baton.subscription": self._input,
        }
        if self._group:
            attributes["messaging.consumer.group.name"] = self._group
        if record.key is not None:
            attributes["messaging.kafka.message.key"] = record.key
        if record.event_type:
            attributes["baton.event_type"] = record.event_type
        if order is not None:
            attributes["messaging.message.conversation_id"] = order
            attributes["baton.order_id"] = order
        return self._tracer.start_span(
            f"process {record.topic}",
            context=_within(parent),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            start_time=started_ns,
        )

    def _create(self, event: Outgoing, order: str, cause: SpanContext) -> trace.Span:
        """The creation context of an event for another order than its record's, in that order's trace."""
        assert self._tracer is not None
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "create",
            "messaging.operation.name": "create",
            "messaging.destination.name": event.topic,
            "messaging.kafka.message.key": event.key,
            "messaging.message.conversation_id": order,
            "baton.service": self._service,
            "baton.order_id": order,
        }
        if event_id := event.headers.get("event_id"):
            attributes["messaging.message.id"] = event_id
        if event_type := event.headers.get("event_type"):
            attributes["baton.event_type"] = event_type
        span = self._tracer.start_span(
            f"create {event.topic}",
            context=_within(_order_root(order)),
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            links=[Link(cause)],
        )
        span.end()
        return span


class _Handling:
    """``RecordSpans.handling``: a class, not a generator, as it wraps every handler call."""

    __slots__ = ("_attached", "_named", "_records", "_spans")

    def __init__(self, spans: RecordSpans, records: Sequence[Incoming]) -> None:
        self._spans = spans
        self._records = records
        self._named: Token[str | None] | None = None
        self._attached: Token[Context] | None = None

    def __enter__(self) -> None:
        records = self._records
        order = order_id_of(records[0]) if len(records) == 1 else None
        if order is not None:
            self._named = current_order_id.set(order)
        if self._spans._tracer is not None and (current := self._spans._begin(records, order)) is not None:
            self._attached = otel_context.attach(_context_of(current))

    def __exit__(self, *_: object) -> None:
        if self._attached is not None:
            otel_context.detach(self._attached)
        if self._named is not None:
            current_order_id.reset(self._named)
        if self._spans._tracer is not None:
            self._spans._handled_until(self._records)


def relay_send(
    service: str, client_id: str, topics: Sequence[str], headers: Sequence[Mapping[str, str]], started_ns: int
) -> contextlib.AbstractContextManager[Any]:
    """The PRODUCER span of one relay round, current while it sends and deletes: linked to the
    creation context each record carries, which it leaves as it is."""
    tracer = _tracer
    if tracer is None:
        return _NOTHING
    links = [Link(c) for c in map(_extract, headers[:_MAX_LINKS]) if c is not None]
    distinct = set(topics)
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.client.id": client_id,
        "baton.service": service,
    }
    if len(distinct) == 1:
        attributes["messaging.destination.name"] = topics[0]
    if len(headers) > 1:
        attributes["messaging.batch.message_count"] = len(headers)
    elif headers and (event_id := headers[0].get("event_id")):
        attributes["messaging.message.id"] = event_id
    return _running(
        tracer.start_span(
            f"send {topics[0]}" if len(distinct) == 1 else "send",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            links=links,
            start_time=started_ns,
        )
    )


def now_ns() -> int:
    return time.time_ns()


# Export


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
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "service": span.resource.attributes.get("service.name", ""),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in span.links
        ],
    }
