"""Tracing: one trace per order, computed by every service alone, and kept or dropped whole.

These drive the platform's tracing functions as the services do (process spans around handlers,
transactions, the relay, client calls), one "service" after another with its own tracer, the
records of one passed to the next with the headers it stamped on them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence

import aiohttp
import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from libs.contracts.lifecycle import OrderCancelRequested
from libs.platform import tracing
from libs.platform.logs import JsonFormatter, current_order_id
from libs.platform.records import CORRELATION_ID_HEADER, Incoming, Outgoing

pytestmark = pytest.mark.unit

NAMESPACE = uuid.UUID("6f1c7f0e-2b7a-4a47-9d3e-0c1b8f3b9a10")


@pytest.fixture(autouse=True)
def tracing_off_afterwards() -> Iterator[None]:
    yield
    tracing.shutdown()


class Service:
    """One service process's tracer, exporting to memory."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.exporter = InMemorySpanExporter()

    def __enter__(self) -> Service:
        tracing.configure(self.name, "test", None, processors=[SimpleSpanProcessor(self.exporter)])
        return self

    def __exit__(self, *_: object) -> None:
        tracing.shutdown()

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


def event(topic: str, order_id: str, kind: str) -> Outgoing:
    return Outgoing(
        topic=topic,
        key=order_id,
        value=b"{}",
        headers={"event_id": str(uuid.uuid4()), "event_type": kind, CORRELATION_ID_HEADER: order_id},
    )


def delivered(events: Sequence[Outgoing], offset: int = 0) -> list[Incoming]:
    """What the next service reads: the events with the headers the sender stamped."""
    return [Incoming(e.topic, 0, offset + i, e.key, e.value, dict(e.headers)) for i, e in enumerate(events)]


def apply_batch(
    service: str, input_name: str, records: Sequence[Incoming], causes: dict[int, list[Outgoing]]
) -> None:
    """One transaction with a batch handler given all the records."""
    with (
        tracing.transaction(service, input_name, len(records)),
        tracing.RecordSpans(
            service, input_name, f"baton.{service}.{input_name}", trust_event_id=True
        ) as spans,
    ):
        with spans.handling(records):
            pass
        for i, record in enumerate(records):
            spans.finish(record, causes.get(i, []), "applied")


def apply_one_by_one(
    service: str, input_name: str, records: Sequence[Incoming], causes: dict[int, list[Outgoing]]
) -> None:
    """A record handler: each record's span is current while it runs (a query made meanwhile is its child)."""
    with (
        tracing.transaction(service, input_name, len(records)),
        tracing.RecordSpans(service, input_name) as spans,
    ):
        for i, record in enumerate(records):
            with (
                spans.handling([record]),
                tracing.client_call("SELECT", None, {"db.system.name": "postgresql"}),
            ):
                pass
            spans.finish(record, causes.get(i, []), "applied")


def in_chunks(records: Sequence[Incoming], size: int) -> Iterator[tuple[int, Sequence[Incoming]]]:
    for start in range(0, len(records), size):
        yield start, records[start : start + size]


def run_fleet(orders: Sequence[str]) -> list[ReadableSpan]:
    """Each order: a channel's submission to intake (keyed by the channel's id: its order shows only
    in what intake makes of it), a fact to validation, a warehouse update keyed by shipment id to
    fulfillment, a stage event to notification, which e-mails the customer. Every service relays
    what it wrote. Returns every span every service exported."""
    exported: list[ReadableSpan] = []
    submissions = [
        Incoming("orders.submitted.v1", 0, i, f"web:ext-{i}", b"{}", {}) for i in range(len(orders))
    ]
    with Service("intake") as intake:
        facts: list[Outgoing] = []
        for start, chunk in in_chunks(submissions, 50):
            causes = {
                i: [event("validation.facts.v1", orders[start + i], "order.received")]
                for i in range(len(chunk))
            }
            apply_batch("intake", "submissions", chunk, causes)
            facts += [e for c in causes.values() for e in c]
        with tracing.relay_send("intake", "relay", [e.topic for e in facts], [e.headers for e in facts], 0):
            pass
        exported += intake.spans
    with Service("validation") as validation:
        for _start, chunk in in_chunks(delivered(facts), 20):
            apply_one_by_one("validation", "facts", chunk, {})
        exported += validation.spans
    updates = [
        Incoming("fulfillment.updates.v1", 0, i, str(uuid.uuid5(NAMESPACE, f"shipment/{o}")), b"{}", {})
        for i, o in enumerate(orders)
    ]
    with Service("fulfillment") as fulfillment:
        stages: list[Outgoing] = []
        for start, chunk in in_chunks(updates, 100):
            causes = {
                i: [event("fulfillment.stage-changes.v1", orders[start + i], "fulfillment.stage-changed")]
                for i in range(len(chunk))
            }
            apply_batch("fulfillment", "updates", chunk, causes)
            stages += [e for c in causes.values() for e in c]
        exported += fulfillment.spans
    with Service("notification") as notification:
        for _start, chunk in in_chunks(delivered(stages), 100):
            apply_batch("notification", "stages", chunk, {})
        for order_id in orders:
            with tracing.client_call("SMTP send", order_id, {"network.protocol.name": "smtp"}):
                pass
        exported += notification.spans
    return exported


SPANS_PER_ORDER = 6
"""intake, validation (and its query), fulfillment and notification process spans, the e-mail."""


@pytest.mark.parametrize("sampler", ["parentbased_traceidratio", "traceidratio"])
def test_a_quarter_of_the_orders_are_kept_whole_and_the_rest_dropped_whole(
    monkeypatch: pytest.MonkeyPatch, sampler: str
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    orders = [str(uuid.uuid5(NAMESPACE, f"order/{i}")) for i in range(2000)]

    spans = run_fleet(orders)

    by_trace = Counter(s.context.trace_id for s in spans)
    per_order = [by_trace[tracing.order_trace_id(o)] for o in orders]
    assert set(per_order) <= {0, SPANS_PER_ORDER}, Counter(per_order)
    kept = sum(1 for n in per_order if n) / len(orders)
    assert 0.20 <= kept <= 0.30, kept
    for span in spans:  # a span naming an order is in that order's trace
        named = (span.attributes or {}).get("baton.order_id")
        if named is not None:
            assert span.context.trace_id == tracing.order_trace_id(str(named))


def test_each_hop_is_the_child_of_the_one_before_and_every_service_finds_the_same_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    orders = [str(uuid.uuid5(NAMESPACE, f"order/{i}")) for i in range(20)]

    spans = run_fleet(orders)

    trees: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        trees[span.context.trace_id].append(span)
    for order_id in orders:
        tree = trees[tracing.order_trace_id(order_id) or 0]
        assert len(tree) == SPANS_PER_ORDER
        by_service = {
            str(s.resource.attributes["service.name"]): s for s in tree if s.kind is SpanKind.CONSUMER
        }
        intake, validation = by_service["baton-intake"], by_service["baton-validation"]
        assert validation.parent is not None and validation.parent.span_id == intake.context.span_id
        query = next(s for s in tree if s.name == "SELECT")
        assert query.parent is not None and query.parent.span_id == validation.context.span_id
        # The warehouse update carried no context, yet its span is in the order's trace.
        assert (by_service["baton-fulfillment"].attributes or {})["messaging.kafka.message.key"] != order_id


def test_process_spans_carry_the_messaging_conventions_and_link_to_their_batch() -> None:
    order_id = str(uuid.uuid4())
    record = Incoming("validation.facts.v1", 3, 42, order_id, b"{}", {"event_id": "e-1", "event_type": "x"})
    with Service("validation") as service:
        apply_batch("validation", "facts", [record, dataclasses.replace(record, offset=43)], {})
        spans = service.spans
    batch = next(s for s in spans if s.name == "validation transaction facts")
    process = next(s for s in spans if s.name == "process validation.facts.v1")
    assert (
        dict(process.attributes or {}).items()
        >= {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": "validation.facts.v1",
            "messaging.destination.partition.id": "3",
            "messaging.kafka.offset": 42,
            "messaging.consumer.group.name": "baton.validation.facts",
            "messaging.message.id": "e-1",
            "messaging.kafka.message.key": order_id,
            "messaging.message.conversation_id": order_id,
            "baton.order_id": order_id,
        }.items()
    )
    assert process.kind is SpanKind.CONSUMER
    assert [link.context.span_id for link in process.links] == [batch.context.span_id]
    assert process.context.span_id in {link.context.span_id for link in batch.links}
    assert process.context.trace_id == tracing.order_trace_id(order_id)


def test_the_relay_sends_in_a_producer_span_linked_to_each_records_creation_context() -> None:
    order_id = str(uuid.uuid4())
    caused = [event("allocation.facts.v1", order_id, "order.validated")]
    with Service("validation") as service:
        apply_batch(
            "validation",
            "facts",
            delivered([event("validation.facts.v1", order_id, "order.received")]),
            {0: caused},
        )
        stamped = dict(caused[0].headers)
        with tracing.relay_send(
            "validation", "relay-1", [caused[0].topic], [caused[0].headers], time.time_ns()
        ):
            pass
        spans = service.spans
    send = next(s for s in spans if s.kind is SpanKind.PRODUCER)
    process = next(s for s in spans if s.kind is SpanKind.CONSUMER)
    assert send.name == "send allocation.facts.v1"
    assert [link.context.span_id for link in send.links] == [process.context.span_id]
    assert caused[0].headers == stamped  # the record's traceparent still names the span that created it
    assert f"{process.context.span_id:016x}" in stamped["traceparent"]
    assert (send.attributes or {})["messaging.operation.type"] == "send"


def test_an_event_for_another_order_gets_a_create_span_in_that_orders_trace() -> None:
    arriving = Incoming("inventory.adjustments.v1", 0, 7, "SKU-1", b"{}", {})
    backorders = [str(uuid.uuid4()), str(uuid.uuid4())]
    caused = [event("allocation.facts.v1", o, "order.allocated") for o in backorders]
    with Service("allocation") as service:
        apply_batch("allocation", "adjustments", [arriving], {0: caused})
        spans = service.spans
    process = next(s for s in spans if s.kind is SpanKind.CONSUMER)
    creates = [s for s in spans if s.kind is SpanKind.PRODUCER]
    assert {s.context.trace_id for s in creates} == {tracing.order_trace_id(o) for o in backorders}
    assert all([link.context.span_id for link in s.links] == [process.context.span_id] for s in creates)
    for created, sent in zip(
        sorted(creates, key=lambda s: s.context.trace_id),
        sorted(caused, key=lambda e: tracing.order_trace_id(e.key) or 0),
        strict=True,
    ):
        assert f"{created.context.span_id:016x}" in sent.headers["traceparent"]


def test_a_client_call_outside_any_traced_work_is_not_traced() -> None:
    with Service("relay") as service:
        with tracing.client_call("SELECT", None, {}):
            pass
        with tracing.client_call("SMTP send", str(uuid.uuid4()), {}):
            pass
        spans = service.spans
    assert [s.name for s in spans] == ["SMTP send"]


def test_order_trace_ids_are_a_hash_of_the_order_id_with_uniform_low_bits() -> None:
    order_id = uuid.uuid4()
    derived = tracing.order_trace_id(str(order_id))
    assert derived is not None and derived != order_id.int
    assert tracing.order_trace_id(str(order_id).upper()) == derived == tracing.order_trace_id(order_id.hex)
    assert tracing.order_trace_id("web:ext-1") is None
    # The bits a ratio sampler reads are spread out, unlike a UUID's (whose variant bits sit there).
    low = [tracing.order_trace_id(str(uuid.uuid4())) or 0 for _ in range(4000)]
    below_quarter = sum(1 for t in low if (t & (2**64 - 1)) < 2**62) / len(low)
    assert 0.22 < below_quarter < 0.28


def _drivers_patched() -> bool:
    return hasattr(asyncpg.Connection.execute, "__wrapped__") or hasattr(
        aiohttp.ClientSession.__init__, "__wrapped__"
    )


def test_tracing_off_makes_no_span_and_patches_no_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    tracing.configure("validation", "test", None)
    assert not tracing.enabled()
    assert not _drivers_patched()
    record = Incoming("validation.facts.v1", 0, 1, str(uuid.uuid4()), b"{}", {"event_id": "e"})
    with tracing.RecordSpans("validation", "facts") as spans, spans.handling([record]):
        assert not trace.get_current_span().get_span_context().is_valid
    with Service("validation"):
        assert hasattr(asyncpg.Connection.execute, "__wrapped__")
        assert hasattr(aiohttp.ClientSession.__init__, "__wrapped__")
    assert not _drivers_patched()


def _log_line(message: str) -> dict[str, object]:
    record = logging.LogRecord("baton.test", logging.INFO, __file__, 1, message, None, None)
    return dict(json.loads(JsonFormatter("validation").format(record)), created=record.created)


def test_a_handlers_log_lines_carry_its_order_trace_and_span_in_utc() -> None:
    order_id = str(uuid.uuid4())
    record = Incoming("validation.facts.v1", 0, 1, order_id, b"{}", {"event_id": "e"})
    with Service("validation") as service:
        with tracing.RecordSpans("validation", "facts") as spans:
            with spans.handling([record]):
                line = _log_line("checking the order")
            spans.finish(record, [], "applied")
        outside = _log_line("idle")
        (span,) = service.spans
    assert line["order_id"] == order_id
    assert line["trace_id"] == f"{tracing.order_trace_id(order_id):032x}" == f"{span.context.trace_id:032x}"
    assert line["span_id"] == f"{span.context.span_id:016x}"
    created = float(str(line["created"]))
    assert (
        line["ts"]
        == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"
    )
    assert "order_id" not in outside and "trace_id" not in outside


def test_without_tracing_a_handlers_log_lines_still_name_its_order() -> None:
    order_id = str(uuid.uuid4())
    record = Incoming("validation.facts.v1", 0, 1, order_id, b"{}", {CORRELATION_ID_HEADER: order_id})
    with tracing.RecordSpans("validation", "facts") as spans, spans.handling([record]):
        line = _log_line("checking the order")
    assert line["order_id"] == order_id and "trace_id" not in line
    assert current_order_id.get() is None


def test_every_event_baton_sends_names_its_order_in_a_correlation_id_header() -> None:
    fact = OrderCancelRequested(order_id=uuid.uuid4(), request_id="r-1")
    for out in [
        *Outgoing.events(["a.v1", "b.v1"], fact.partition_key(), fact, producer="intake"),
        Outgoing.event("c.v1", fact.partition_key(), fact, producer="intake"),
    ]:
        assert out.headers[CORRELATION_ID_HEADER] == str(fact.order_id)
