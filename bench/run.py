"""`make bench`: Baton's throughput, latency and cost, against the bare transport, in one run.

1. Transport baseline: a chain of bare aiokafka relay processes with as many hops as the order
   pipeline (getmany, sends not awaited one by one, idempotent producer, acks=all, commit after the
   sends are acknowledged), carrying messages of an order's size. The ceiling Kafka + Python give us.
   Run twice: on the plain broker and on the secured one (SASL_SSL, SCRAM-SHA-512, TLS everywhere);
   the ratio is what security costs. The secured chain logs in as the admin, a super user, so the
   authorizer's ACL lookup (a map lookup per request) is not in the figure; TLS and SASL are.
2. Fleet, closed loop: the five services as processes, one each, fed as fast as they accept
   (a bounded window of orders in flight); sustained orders/s to `allocated` and `in_fulfillment`.
3. Fleet, open loop: a fixed arrival rate (default 50 % of the closed-loop figure); latency from the
   *scheduled* send time (free of coordinated omission) to `allocated` and `in_fulfillment`.
4. Cost: CPU seconds per 1,000 orders per service and for the broker; peak RSS per service.
5. The HTTP gateway alone (`bench/gateway.py`): accepted requests/s with 32 clients, then p50/p99 at
   half that rate (`--gateway-only` runs just this and writes nothing).

Writes `bench/results/<date>.json` and a PNG chart, prints a table and compares with the previous file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from bench.gateway import gateway_bench
from libs.cli.progress import Phases
from libs.contracts import topics
from libs.platform import stack
from libs.platform.kafka import KafkaAccess, KafkaSecurity, wait_for_leaders
from libs.platform.relay import make_producer
from libs.platform.settings import BatonSettings
from libs.platform.supervisor import Supervisor
from libs.simulators.world import demo_shop, random_order
from tests.support.infra import (
    Infra,
    delete_topics,
    fresh_environment,
    fresh_name,
    start_infra,
    start_secure_infra,
    stop_infra,
)
from tests.support.mail import MailBox
from tests.support.policy import channels_file

RESULTS = Path(__file__).parent / "results"
HOPS = (
    6  # submitted -> intake -> validation -> allocation -> fulfillment -> intake -> status (in_fulfillment)
)
SERVICES = ["intake", "validation", "allocation", "fulfillment", "notification"]


PHASES = ("transport", "fleet start", "closed loop", "open loop", "bare open loop")
_phases: Phases | None = None
"""Progress bars of this run, when its output is a terminal (set by ``main``)."""


def progress(
    phase: str, started: float, line: str, done: float | None = None, total: float | None = None
) -> None:
    """What the bench is doing, so a run of minutes is never silent: on a terminal a bar per phase
    (``done`` of ``total``), otherwise one line, every few seconds from the callers."""
    if _phases is None or not _phases.interactive:
        print(f"  [{phase:12} {time.monotonic() - started:6.0f}s] {line}", flush=True)
        return
    if _phases.phase != phase:
        _phases.start(phase, total)
    _phases.update(done, line, total)


# ---------------------------------------------------------------- transport baseline


async def relay(kafka: KafkaAccess, source: str, target: str, group: str) -> None:
    """One hop of the bare chain: consume a batch, send it all, await the acks, then commit."""
    consumer = kafka.consumer(
        source,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1000,
    )
    producer = make_producer(kafka, "bench")
    await consumer.start()
    await producer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            futures = [await producer.send(target, r.value, key=r.key) for rs in batches.values() for r in rs]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


@contextlib.asynccontextmanager
async def relay_chain(infra: Infra) -> Any:
    """A chain of ``HOPS`` relay processes on fresh topics; yields (first topic, last topic)."""
    prefix = fresh_name("bench") + "."
    names = [f"{prefix}hop{i}" for i in range(HOPS + 1)]
    admin = infra.kafka.admin()
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 8, 1) for n in names])
        await wait_for_leaders(admin, names)
    finally:
        await admin.close()
    # The relays learn how to log in from their environment, never from their command line.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "BATON_KAFKA_"))}
    env |= infra.principal_env("admin") if infra.secured else {}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.run", "--relay", infra.bootstrap_servers, names[i], names[i + 1]],
            env=env,
        )
        for i in range(HOPS)
    ]
    try:
        yield names[0], names[-1]
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(10)
        await delete_topics(infra, prefix)


async def transport_baseline(infra: Infra, messages: int, payload: bytes) -> dict[str, Any]:
    """``messages`` as fast as the chain takes them: messages per second through every hop."""
    kafka = infra.kafka
    async with relay_chain(infra) as (first, last):
        consumer = kafka.consumer(group_id=None)
        await consumer.start()
        consumer.assign([TopicPartition(last, p) for p in range(8)])
        await consumer.seek_to_end()
        producer = make_producer(kafka, "bench")
        await producer.start()
        await asyncio.sleep(5)  # relays join their groups
        started = time.monotonic()
        sends = [await producer.send(first, payload, key=str(i).encode()) for i in range(messages)]
        await asyncio.gather(*sends)
        received, shown = 0, time.monotonic()
        deadline = time.monotonic() + 300
        while received < messages and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                received += len(records)
            if time.monotonic() - shown > 5:
                shown = time.monotonic()
                rate = received / (shown - started)
                progress(
                    "transport",
                    started,
                    f"{received:,} of {messages:,} through {HOPS} hops, {rate:,.0f} msg/s",
                    done=received,
                    total=messages,
                )
        elapsed = time.monotonic() - started
        await producer.stop()
        await consumer.stop()
    return {
        "hops": HOPS,
        "messages": messages,
        "received": received,
        "payload_bytes": len(payload),
        "seconds": round(elapsed, 2),
        "per_second": round(received / elapsed, 1),
        "secured": bool(infra.secured),
    }


async def transport_open_loop(infra: Infra, payload: bytes, rate: float, duration_s: float) -> dict[str, Any]:
    """The bare chain at a fixed arrival rate: latency from each message's *scheduled* send time
    to its arrival after the last hop — what the fleet's open-loop latency is compared with."""
    kafka = infra.kafka
    async with relay_chain(infra) as (first, last):
        consumer = kafka.consumer(group_id=None)
        await consumer.start()
        consumer.assign([TopicPartition(last, p) for p in range(8)])
        await consumer.seek_to_end()
        producer = make_producer(kafka, "bench")
        await producer.start()
        await asyncio.sleep(5)  # relays join their groups
        latencies: list[float] = []
        expected = 0

        async def receive() -> None:
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    now = time.monotonic()
                    latencies.extend((now - float(r.key.decode())) * 1000 for r in records)

        pump = asyncio.create_task(receive())
        try:
            started = shown = time.monotonic()
            while (due := started + expected / rate) < started + duration_s:
                if time.monotonic() - shown >= 5:
                    shown = time.monotonic()
                    progress(
                        "bare open loop",
                        started,
                        f"{expected:,} messages sent at {rate:.1f}/s",
                        done=expected,
                        total=rate * duration_s,
                    )
                if (delay := due - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                await producer.send(first, payload, key=repr(due).encode())
                expected += 1
            deadline = time.monotonic() + 60
            while len(latencies) < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        finally:
            pump.cancel()
            await producer.stop()
            await consumer.stop()
    return {"rate_per_s": round(rate, 1), "seconds": duration_s, "messages": expected} | _percentiles(
        sorted(latencies)
    )


# ---------------------------------------------------------------- fleet


class Watch:
    """When each order reached `allocated` and `in_fulfillment` (from the public status topic)."""

    def __init__(self) -> None:
        self.reached: dict[str, dict[str, float]] = {}
        self._counts: Counter[str] = Counter()

    async def pump(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.monotonic()
                for r in records:
                    e = orjson.loads(r.value)
                    statuses = self.reached.setdefault(e["external_id"], {})
                    if e["status"] not in statuses:
                        statuses[e["status"]] = now
                        self._counts[e["status"]] += 1

    def settled(self) -> int:
        """Orders that reached `in_fulfillment` or stopped before it (rejected, backordered)."""
        return self._counts["in_fulfillment"] + self._counts["rejected"] + self._counts["backordered"]

    def count(self, status: str, ids: list[str] | None = None) -> int:
        """Orders that reached ``status``: kept as a running count, because the load loop asks
        twenty times a second and a scan over every order seen made the load generator the
        busiest process of the benchmark (14 CPU-s per 1,000 orders)."""
        if ids is None:
            return self._counts[status]
        return sum(1 for i in ids if status in self.reached.get(i, {}))


class Usage:
    """CPU seconds and peak RSS of the fleet's processes and the broker."""

    WITH_CHILDREN = frozenset({"postgres"})
    """PostgreSQL works in child processes (one backend per connection); the load generator's
    children are the services themselves, counted on their own lines."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {label: psutil.Process(pid) for label, pid in pids.items()}
        self.start = self.cpu()

    def cpu(self) -> dict[str, float]:
        out = {}
        for label, p in self.processes.items():
            try:
                t = p.cpu_times()
                out[label] = t.user + t.system
                if label in self.WITH_CHILDREN:
                    out[label] += sum(c.cpu_times().user + c.cpu_times().system for c in p.children())
            except psutil.NoSuchProcess:
                out[label] = 0.0
        return out

    def peak_rss_mb(self) -> dict[str, float]:
        out = {}
        for label, p in self.processes.items():
            try:
                text = Path(f"/proc/{p.pid}/status").read_text()
                kb = int(next(line for line in text.splitlines() if line.startswith("VmHWM")).split()[1])
                out[label] = round(kb / 1024, 1)
            except (OSError, StopIteration):
                out[label] = 0.0
        return out


async def fleet_run(
    infra: Infra,
    closed_s: float,
    open_s: float,
    warmup_s: float,
    open_share: float,
    log_dir: Path,
    hops_rate: float | None = None,
    rates: list[float] | None = None,
) -> dict[str, Any]:
    """With ``hops_rate``: no closed loop; the fleet traces to files while orders arrive at that
    rate, and the result says where each order's latency goes, hop by hop. With ``rates``: no
    closed loop and no tracing; an open loop at each rate in turn (latency against load)."""
    smtp = MailBox()
    smtp_port = smtp.port
    environment = await fresh_environment(infra, "bench")
    settings = environment.settings
    env = environment.service_env() | {
        "BATON_SMTP_PORT": str(smtp_port),
        "BATON_HTTP_PORT": "0",
        "BATON_CHANNELS_FILE": str(channels_file(log_dir, hold_threshold="100000000")),
        "BATON_LOG_LEVEL": "WARNING",
    }
    trace_dir = log_dir / "traces"
    if hops_rate is not None:
        env["BATON_TRACE_DIR"] = str(trace_dir)
    fleet = Supervisor(env, log_dir, database_urls=environment.database_urls)
    producer = make_producer(infra.kafka, "bench")
    consumer = infra.kafka.consumer(
        settings.topic(topics.ORDERS_STATUS),
        group_id=None,
        auto_offset_reset="earliest",
    )
    watch = Watch()
    pump: asyncio.Task[None] | None = None
    started = time.monotonic()
    try:  # everything started from here on is stopped in `finally`, also when the run fails
        smtp.start()
        for name in SERVICES:
            fleet.start(name, name)
        await producer.start()
        await consumer.start()
        pump = asyncio.create_task(watch.pump(consumer))
        shop = demo_shop(skus=50, units_per_location=10_000_000, sku_prefix="B")
        sends = [
            await producer.send(
                settings.topic(topics.CATALOG_PRODUCTS), orjson.dumps(p), key=p["sku"].encode()
            )
            for p in shop.products
        ]
        sends += [
            await producer.send(
                settings.topic(topics.INVENTORY_LOCATIONS), orjson.dumps(loc), key=loc["location_id"].encode()
            )
            for loc in shop.locations
        ]
        sends += [
            await producer.send(
                settings.topic(topics.INVENTORY_ADJUSTMENTS), orjson.dumps(a), key=a["sku"].encode()
            )
            for a in shop.stock
        ]
        await asyncio.gather(*sends)
        progress("fleet start", started, "catalog and stock sent; waiting until they are applied")
        await _wait_seeded(environment.dsn, len(shop.products), len(shop.stock))
        rng = random.Random(1)
        counter = iter(range(10**9))

        def next_order() -> tuple[str, bytes]:
            external_id = f"b{next(counter)}"
            return external_id, orjson.dumps(
                random_order(rng, shop, external_id, invalid_share=0.0, express_share=0.2)
            )

        # Warm up until orders flow end to end.
        warm = []
        for _ in range(200):
            eid, body = next_order()
            warm.append(eid)
            await producer.send(settings.topic(topics.ORDERS_SUBMITTED), body, key=f"webshop:{eid}".encode())
        deadline, shown = time.monotonic() + 180, time.monotonic()
        while (through := watch.count("in_fulfillment", warm)) < 190 and time.monotonic() < deadline:
            if time.monotonic() - shown >= 5:
                shown = time.monotonic()
                progress("fleet start", started, f"{through} of 200 warm-up orders through", through, 200)
            await asyncio.sleep(0.5)
        pids = {s: p.pid for s, p in fleet.processes.items()}
        broker_pid = int((stack.KafkaBroker().pid_file).read_text()) if not stack.external_kafka() else None
        if broker_pid:
            pids["kafka"] = broker_pid
        if not stack.external_database():  # the database's CPU is part of the fleet's cost too
            postmaster = stack.PostgresServer().data_dir / "postmaster.pid"
            pids["postgres"] = int(postmaster.read_text().split()[0])
        pids["load generator + mail sink"] = os.getpid()  # same cores: shown, not hidden

        if hops_rate is not None:
            since_ns = time.time_ns()
            opened = await _open_loop(producer, settings, watch, next_order, hops_rate, open_s)
            await asyncio.sleep(2)  # the services flush spans every half second
            return {
                "open_loop": opened,
                "hops": hop_gaps(trace_dir, since_ns),
                "hop_parts": hop_parts(trace_dir, since_ns),
            }
        if rates is not None:
            return {
                "open_loops": [
                    await _open_loop(producer, settings, watch, next_order, rate, open_s, Usage(pids))
                    for rate in rates
                ]
            }
        closed = await _closed_loop(producer, settings, watch, next_order, closed_s, warmup_s, pids)
        rate = max(1.0, closed["in_fulfillment_per_s"] * open_share)
        opened = await _open_loop(producer, settings, watch, next_order, rate, open_s)
        usage = Usage(pids)
        return {"closed_loop": closed, "open_loop": opened, "peak_rss_mb": usage.peak_rss_mb()}
    finally:
        if pump is not None:
            pump.cancel()
        await consumer.stop()
        await producer.stop()
        fleet.stop()
        smtp.stop()
        await environment.drop()


async def _wait_seeded(dsn: str, products: int, adjustments: int, timeout_s: float = 120) -> None:
    """The catalog and stock are applied before the first order: an order validated before its
    product arrived would be rejected, and the loops would wait for it forever."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                if await conn.fetchval(
                    "SELECT (SELECT count(*) FROM validation.products) >= $1"
                    " AND (SELECT count(*) FROM allocation.adjustments) >= $2",
                    products,
                    adjustments,
                ):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("the bench's catalog and stock were not applied")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def _closed_loop(
    producer: AIOKafkaProducer,
    settings: BatonSettings,
    watch: Watch,
    next_order: Any,
    duration_s: float,
    warmup_s: float,
    pids: dict[str, int],
    window: int = 3000,
) -> dict[str, Any]:
    """Keep `window` orders in flight; measure completions over `duration_s` after `warmup_s`."""
    submitted: list[str] = []
    topic = settings.topic(topics.ORDERS_SUBMITTED)
    started = time.monotonic()
    measure_from = started + warmup_s
    measure_to = measure_from + duration_s
    base: dict[str, int] = {}
    usage: Usage | None = None
    cpu_before: dict[str, float] = {}
    shown, shown_count = started, 0
    while time.monotonic() < measure_to:
        if time.monotonic() - shown >= 5:
            now, count = time.monotonic(), watch.count("in_fulfillment")
            recent = (count - shown_count) / (now - shown)
            shown, shown_count = now, count
            if base:
                so_far = (count - base["in_fulfillment"]) / (now - measure_from)
                progress(
                    "closed loop",
                    started,
                    f"{so_far:,.1f} orders/s to in_fulfillment so far, {recent:,.1f}/s in the last 5 s",
                    done=now - started,
                    total=warmup_s + duration_s,
                )
            else:
                progress(
                    "closed loop",
                    started,
                    f"warming up, {watch.count('in_fulfillment'):,} orders through",
                    done=now - started,
                    total=warmup_s + duration_s,
                )
        done = watch.count("in_fulfillment")
        in_flight = len(submitted) - done
        for _ in range(max(0, min(500, window - in_flight))):
            eid, body = next_order()
            submitted.append(eid)
            await producer.send(topic, body, key=f"webshop:{eid}".encode())
        if not base and time.monotonic() >= measure_from:
            base = {"allocated": watch.count("allocated"), "in_fulfillment": watch.count("in_fulfillment")}
            usage = Usage(pids)
            cpu_before = usage.start
        await asyncio.sleep(0.05)
    allocated = watch.count("allocated") - base["allocated"]
    in_fulfillment = watch.count("in_fulfillment") - base["in_fulfillment"]
    assert usage is not None
    cpu_after = usage.cpu()
    per_thousand = {
        label: round((cpu_after[label] - cpu_before[label]) / max(1, in_fulfillment) * 1000, 2)
        for label in cpu_after
    }
    return {
        "seconds": duration_s,
        "warmup_s": warmup_s,
        "window": window,
        "allocated_per_s": round(allocated / duration_s, 1),
        "in_fulfillment_per_s": round(in_fulfillment / duration_s, 1),
        "cpu_s_per_1000_orders": per_thousand,
    }


async def _open_loop(
    producer: AIOKafkaProducer,
    settings: BatonSettings,
    watch: Watch,
    next_order: Any,
    rate: float,
    duration_s: float,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """Send at a fixed rate; latency counts from when each order was *due*, not when it was sent."""
    topic = settings.topic(topics.ORDERS_SUBMITTED)
    # Start from an idle fleet: the closed loop's in-flight window must drain first, or its queue
    # would be measured as open-loop latency.
    deadline = time.monotonic() + 300
    while watch.settled() < len(watch.reached) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    already = watch.count("in_fulfillment")
    scheduled: dict[str, float] = {}
    started = time.monotonic()
    cpu_before = _busy_cpu_s()
    by_process_before = usage.cpu() if usage is not None else {}
    n = 0
    shown = started
    while (due := started + n / rate) < started + duration_s:
        if time.monotonic() - shown >= 5:
            shown = time.monotonic()
            progress(
                "open loop", started, f"{n:,} orders sent at {rate:.1f}/s", done=n, total=rate * duration_s
            )
        if (delay := due - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        eid, body = next_order()
        scheduled[eid] = due
        await producer.send(topic, body, key=f"webshop:{eid}".encode())
        n += 1
    cores_busy = (_busy_cpu_s() - cpu_before) / (time.monotonic() - started)
    by_process = usage.cpu() if usage is not None else {}
    deadline = time.monotonic() + 60
    expected = already + len(scheduled)
    while watch.count("in_fulfillment") < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    result: dict[str, Any] = {
        "rate_per_s": round(rate, 1),
        "seconds": duration_s,
        "orders": len(scheduled),
        "machine_cores_busy": round(cores_busy, 2),
    }
    if by_process:  # CPU per order of each process while the orders were sent (with --rates)
        result["cpu_ms_per_order"] = {
            label: round((spent - by_process_before.get(label, 0.0)) / max(1, n) * 1000, 2)
            for label, spent in by_process.items()
        }
    for status in ("allocated", "in_fulfillment"):
        latencies = sorted(
            (watch.reached[e][status] - t) * 1000
            for e, t in scheduled.items()
            if status in watch.reached.get(e, {})
        )
        result[status] = _percentiles(latencies) | {"completed": len(latencies)}
        # Steady or growing? The median of each sixth of the window, by when orders were due: a
        # fleet that keeps up shows flat figures, one that falls behind a rising line.
        by_due = sorted((t, e) for e, t in scheduled.items() if status in watch.reached.get(e, {}))
        sixth = max(1, len(by_due) // 6)
        result[status]["p50_ms_by_sixth"] = [
            round(
                statistics.median((watch.reached[e][status] - t) * 1000 for t, e in by_due[i : i + sixth]), 1
            )
            for i in range(0, sixth * 6, sixth)
            if by_due[i : i + sixth]
        ]
    return result


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (every process on it, the kernel's share too)."""
    times = psutil.cpu_times()
    return float(
        times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
    )


def read_spans(trace_dir: Path, since_ns: int = 0) -> dict[str, dict[str, Any]]:
    """The spans the fleet's processes wrote (one JSON object a line) that started in the window."""
    spans: dict[str, dict[str, Any]] = {}
    for path in trace_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                span = json.loads(line)
                if span["start_ns"] >= since_ns:
                    spans[span["span_id"]] = span
    return spans


def hop_gaps(trace_dir: Path, since_ns: int = 0) -> dict[str, dict[str, float]]:
    """From the fleet's spans: per hop, the wait between the span that caused an event ending and
    the span that applied it starting (commit, outbox relay, broker, fetch, batching), and per
    service the time its handler took."""
    spans = {
        i: span for i, span in read_spans(trace_dir, since_ns).items() if span["name"].startswith("process ")
    }
    waits: dict[str, list[float]] = {}
    handling: dict[str, list[float]] = {}
    for span in spans.values():
        service = span["service"].removeprefix("baton-")
        handling.setdefault(f"{service} handler", []).append((span["end_ns"] - span["start_ns"]) / 1e6)
        parent = spans.get(span["parent_id"] or "")
        if parent is None:
            continue
        topic = span["attributes"].get("messaging.destination.name", "").split(".", 1)[-1]
        hop = f"{parent['service'].removeprefix('baton-')} -> {service} ({topic})"
        waits.setdefault(hop, []).append((span["start_ns"] - parent["end_ns"]) / 1e6)
    return {
        name: _percentiles(sorted(values)) | {"n": len(values)}
        for name, values in sorted((waits | handling).items())
    }


HOP_PARTS = (
    "handler end -> commit and release",
    "relay round, start -> broker ack",
    "ack -> next transaction starts",
    "next transaction's claim -> handler",
)


def hop_parts(trace_dir: Path, since_ns: int = 0) -> dict[str, dict[str, float]]:
    """Each hop's wait taken apart (p50 of each part, ms), from every span of the run: the causing
    record's transaction, the relay round that sent what it caused (its delete starts once the
    broker acknowledged), and the transaction that applied the result."""
    spans = read_spans(trace_dir, since_ns)
    sent_by: dict[str, dict[str, Any]] = {}
    """A record's process span -> the relay round that sent what it caused."""
    applied_in: dict[str, dict[str, Any]] = {}
    """A record's process span -> the transaction it was applied in."""
    acked_at: dict[str, int] = {}
    """A relay round -> when its delete started (the broker had acknowledged)."""
    for span in spans.values():
        if span["kind"] == "PRODUCER" and span["parent_id"] is None:
            for link in span["links"]:
                sent_by.setdefault(link["span_id"], span)
        elif " transaction " in span["name"]:
            for link in span["links"]:
                applied_in[link["span_id"]] = span
        elif span["name"] == "DELETE" and span["parent_id"]:
            acked_at[span["parent_id"]] = span["start_ns"]
    parts: dict[str, list[list[float]]] = {}
    for child in spans.values():
        parent = spans.get(child["parent_id"] or "")
        if not child["name"].startswith("process ") or parent is None:
            continue
        relay, caused_in, applied = (
            sent_by.get(parent["span_id"]),
            applied_in.get(parent["span_id"]),
            applied_in.get(child["span_id"]),
        )
        if relay is None or caused_in is None or applied is None:
            continue
        acked = acked_at.get(relay["span_id"], relay["end_ns"])
        topic = child["attributes"].get("messaging.destination.name", "").split(".", 1)[-1]
        hop = f"{parent['service'].removeprefix('baton-')} -> {child['service'].removeprefix('baton-')} ({topic})"
        marks = (
            parent["end_ns"],
            caused_in["end_ns"],
            relay["start_ns"],
            acked,
            applied["start_ns"],
            child["start_ns"],
        )
        columns = parts.setdefault(hop, [[] for _ in HOP_PARTS])
        columns[0].append((marks[1] - marks[0]) / 1e6)
        columns[1].append((marks[3] - marks[2]) / 1e6)
        columns[2].append((marks[4] - marks[3]) / 1e6)
        columns[3].append((marks[5] - marks[4]) / 1e6)
    return {
        hop: {
            name: round(statistics.median(values), 1) for name, values in zip(HOP_PARTS, columns, strict=True)
        }
        | {"n": len(columns[0])}
        for hop, columns in sorted(parts.items())
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))], 1)

    return {
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(values[-1], 1),
        "mean_ms": round(statistics.fmean(values), 1),
    }


# ---------------------------------------------------------------- report


CORE_COMPONENTS = ("intake", "validation", "allocation", "fulfillment", "notification", "kafka", "postgres")
"""What `fleet.closed_loop.cpu_s_per_1000_orders` sums to the fleet's own cost per order (the load
generator and mail sink are shown but not counted)."""


def fleet_cpu_ms_per_order(result: dict[str, Any]) -> float | None:
    cpu = ((result.get("fleet") or {}).get("closed_loop") or {}).get("cpu_s_per_1000_orders") or {}
    parts = [cpu[k] for k in CORE_COMPONENTS if k in cpu]
    return round(sum(parts), 2) if parts else None


def print_table(
    result: dict[str, Any], previous: dict[str, Any] | None, baseline: dict[str, Any] | None = None
) -> None:
    """``baseline``: the first result recorded on this machine, what issue 13's CPU target (a third
    of the cost per order before the work) is measured against; ``previous``: the latest."""

    def was(path: list[str]) -> str:
        value: Any = previous
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return f" (was {value})" if value is not None else ""

    t, c, o = result["transport"], result["fleet"]["closed_loop"], result["fleet"]["open_loop"]
    ratio = c["in_fulfillment_per_s"] / t["per_second"] if t["per_second"] else 0
    print(
        f"\nBaton benchmark {result['date']} on {result['machine']['cpus']} cores ({result['machine']['id']})"
    )
    if previous is None:
        print("  (no earlier result from this machine to compare with)")
    else:
        print(f"  (was: {previous['date']}, the latest earlier result from this machine)")
    print_transport(result, was)
    print(
        f"  fleet closed loop -> allocated              {c['allocated_per_s']:>8} orders/s"
        + was(["fleet", "closed_loop", "allocated_per_s"])
    )
    print(
        f"  fleet closed loop -> in_fulfillment         {c['in_fulfillment_per_s']:>8} orders/s"
        + was(["fleet", "closed_loop", "in_fulfillment_per_s"])
        + f"   = {ratio:.1%} of transport"
    )
    for status in ("allocated", "in_fulfillment"):
        lat = o[status]
        print(
            f"  open loop @ {o['rate_per_s']}/s -> {status:15} p50 {lat.get('p50_ms')} ms  p95 {lat.get('p95_ms')}"
            f"  p99 {lat.get('p99_ms')}  max {lat.get('max_ms')}"
            + was(["fleet", "open_loop", status, "p99_ms"])
        )
    if sixths := o["allocated"].get("p50_ms_by_sixth"):
        print(f"    p50 -> allocated, each sixth of the window: {', '.join(map(str, sixths))} ms")
    if (busy := o.get("machine_cores_busy")) is not None:
        print(f"    the machine meanwhile: {busy} of {result['machine']['cpus']} cores busy")
    bare = result.get("transport_open_loop") or {}
    if bare:
        print(
            f"  bare chain @ {bare['rate_per_s']}/s ({HOPS} hops)        p50 {bare.get('p50_ms')} ms"
            f"  p95 {bare.get('p95_ms')}  p99 {bare.get('p99_ms')}  max {bare.get('max_ms')}"
        )
    print("  CPU s per 1,000 orders: " + ", ".join(f"{k} {v}" for k, v in c["cpu_s_per_1000_orders"].items()))
    cost = fleet_cpu_ms_per_order(result)
    first = baseline or previous
    before = fleet_cpu_ms_per_order(first) if first else None
    print(
        f"  fleet CPU per order (services + Kafka + PostgreSQL): {cost} ms"
        + (f" (was {before}: x{cost / before:.2f})" if cost and before else "")
    )
    print("  peak RSS MB: " + ", ".join(f"{k} {v}" for k, v in result["fleet"]["peak_rss_mb"].items()))
    print_gateway(result.get("gateway"))
    p99 = o["allocated"].get("p99_ms")
    print("  targets (issue 13), ratios within this run:")
    print(
        f"    fleet -> in_fulfillment >= 6 % of the bare chain's msg/s: {ratio:.1%}  {'MET' if ratio >= 0.06 else 'NOT MET'}"
    )
    print(
        f"    p99 submit -> allocated <= 150 ms at half the closed-loop rate: {p99} ms  "
        f"{'MET' if p99 is not None and p99 <= 150 else 'NOT MET'}"
    )
    print(
        "    fleet CPU per order <= a third of the first result from this machine"
        + (f" ({first.get('date')}, {before} ms): " if first else ": ")
        + (
            f"x{cost / before:.2f}  {'MET' if cost / before <= 1 / 3 else 'NOT MET'}"
            if cost and before
            else "no baseline"
        )
    )


def print_transport(result: dict[str, Any], was: Any = lambda path: "") -> None:
    t, s = result["transport"], result.get("transport_secured")
    print(
        f"  transport baseline ({t['hops']} hops, {t['payload_bytes']} B)   {t['per_second']:>8} msg/s"
        + was(["transport", "per_second"])
    )
    if s:
        print(
            f"  transport secured (SASL_SSL)              {s['per_second']:>8} msg/s"
            f"   = {result['secured_ratio']:.2f} of plain (expected >= 0.8; rounds: plain "
            f"{t.get('rounds')}, secured {s.get('rounds')})" + was(["secured_ratio"])
        )


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, o = result["fleet"]["closed_loop"], result["fleet"]["open_loop"]
    fig, (a, b, d) = plt.subplots(1, 3, figsize=(15, 4.5))
    a.bar(
        ["transport\n(msg/s)", "fleet→allocated", "fleet→in_fulfillment"],
        [result["transport"]["per_second"], c["allocated_per_s"], c["in_fulfillment_per_s"]],
        color=["#999", "#4a7", "#27a"],
    )
    a.axhline(500, color="red", linestyle="--", label="target 500/s")
    a.set_title("Throughput")
    a.legend()
    labels = ["p50_ms", "p95_ms", "p99_ms", "max_ms"]
    for i, status in enumerate(("allocated", "in_fulfillment")):
        b.bar([x + i * 0.4 for x in range(4)], [o[status].get(k, 0) for k in labels], width=0.4, label=status)
    b.set_xticks([x + 0.2 for x in range(4)], labels)
    b.axhline(250, color="red", linestyle="--", label="p99 target (allocated)")
    b.set_title(f"Open-loop latency at {o['rate_per_s']}/s (ms)")
    b.legend()
    rss = result["fleet"]["peak_rss_mb"]
    d.bar(list(rss), list(rss.values()), color="#a74")
    d.axhline(150, color="red", linestyle="--", label="150 MB per service")
    d.set_title("Peak RSS (MB)")
    d.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


async def transports(infra: Infra, messages: int, payload: bytes, rounds: int) -> tuple[dict[str, Any], ...]:
    """The chain on the plain and on the secured broker (started here unless it runs, stopped if
    started), alternating for ``rounds`` rounds; the best round of each, so that a moment of load
    from elsewhere on the machine does not decide the ratio."""
    secured_infra = await asyncio.to_thread(start_secure_infra, infra)
    plain: list[dict[str, Any]] = []
    secured: list[dict[str, Any]] = []
    try:
        for _ in range(rounds):
            plain.append(await transport_baseline(infra, messages, payload))
            secured.append(await transport_baseline(secured_infra, messages, payload))
    finally:
        stop_infra(secured_infra)
    best_plain = max(plain, key=lambda r: r["per_second"])
    best_secured = max(secured, key=lambda r: r["per_second"])
    return best_plain | {"rounds": [r["per_second"] for r in plain]}, best_secured | {
        "rounds": [r["per_second"] for r in secured]
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on; results are compared only with earlier ones from the
    same machine (the same commit measured 149 orders/s on one 2-core machine and 65-71 on another)."""
    model = ""
    with contextlib.suppress(OSError):
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    identity = f"{os.uname().nodename}|{model}|{os.cpu_count()}"
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "cpu_model": model,
        "id": hashlib.sha256(identity.encode()).hexdigest()[:12],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    infra = start_infra()
    fleet: dict[str, Any] | None = None
    gateway: dict[str, Any] | None = None
    try:
        payload = order_payload()
        transport, secured = await transports(infra, args.transport_messages, payload, args.transport_rounds)
        bare_open: dict[str, Any] | None = None
        if not args.transport_only:
            log_dir = new_log_dir()
            fleet = await fleet_run(
                infra, args.duration, args.open_duration, args.warmup, args.open_share, log_dir
            )
            rate = fleet["open_loop"]["rate_per_s"]
            print(
                f"bare chain at the fleet's open-loop rate, {rate}/s, for {args.open_duration:.0f} s",
                flush=True,
            )
            bare_open = await transport_open_loop(infra, payload, rate, args.open_duration)
            print(f"HTTP gateway: closed loop {args.gateway_duration:.0f} s, then open loop", flush=True)
            gateway = await gateway_bench(infra, args.gateway_duration, args.gateway_duration, log_dir)
    finally:
        stop_infra(infra)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ"),
        "machine": machine(),
        "transport_open_loop": bare_open,
        "transport": transport,
        "transport_secured": secured,
        "secured_ratio": round(secured["per_second"] / transport["per_second"], 3)
        if transport["per_second"]
        else 0.0,
        "fleet": fleet,
        "gateway": gateway,
    }


async def gateway_main(args: argparse.Namespace) -> dict[str, Any]:
    infra = start_infra()
    try:
        log_dir = new_log_dir()
        return await gateway_bench(infra, args.gateway_duration, args.gateway_duration, log_dir)
    finally:
        stop_infra(infra)


def print_gateway(gateway: dict[str, Any] | None) -> None:
    if not gateway:
        return
    c, o = gateway["closed_loop"], gateway["open_loop"]
    print(
        f"  HTTP gateway closed loop ({gateway['concurrency']} clients)  {c['requests_per_s']:>8} accepted requests/s"
    )
    print(
        f"  HTTP gateway open loop @ {o['rate_per_s']}/s -> 202    p50 {o['p50_ms']} ms  p95 {o['p95_ms']}"
        f"  p99 {o['p99_ms']}  max {o['max_ms']}  ({o['not_accepted']} not accepted)"
    )


KEPT_LOG_DIRS = 5
"""Runs whose logs (and, with --hops, traces of every span) stay in .cache: a traced run writes
tens of MB, and nothing else removes them."""


def new_log_dir() -> Path:
    """Where this run's services log; the oldest earlier runs' directories go, the newest kept."""
    earlier = sorted(stack.cache_dir().glob("bench-logs-*"), key=lambda path: path.stat().st_mtime)
    for old in earlier[: max(0, len(earlier) - (KEPT_LOG_DIRS - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return stack.cache_dir() / f"bench-logs-{int(time.time())}"


def order_payload() -> bytes:
    """What the bare chain carries: one order of the demo shop, as a channel would submit it."""
    return orjson.dumps(random_order(random.Random(0), demo_shop(), "x" * 12))


async def rates_main(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The fleet's open loop at each rate, then the bare chain at the same rates: how latency grows
    with load, and how much of it the transport alone would take."""
    infra = start_infra()
    try:
        log_dir = new_log_dir()
        rates = [float(r) for r in args.rates.split(",")]
        fleet = await fleet_run(infra, 0, args.open_duration, 0, 0, log_dir, rates=rates)
        payload = order_payload()
        return [
            {
                "rate_per_s": rate,
                "fleet": loop,
                "bare_chain": await transport_open_loop(infra, payload, rate, args.open_duration),
            }
            for rate, loop in zip(rates, fleet["open_loops"], strict=True)
        ]
    finally:
        stop_infra(infra)


async def hops_main(args: argparse.Namespace) -> dict[str, Any]:
    infra = start_infra()
    try:
        log_dir = new_log_dir()
        fleet = await fleet_run(infra, 0, args.open_duration, 0, 0, log_dir, hops_rate=args.hops)
        opened = fleet["open_loop"]
        print(f"open loop: {opened}")
        return fleet
    finally:
        stop_infra(infra)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--relay":
        import uvloop

        kafka = KafkaAccess(sys.argv[2], KafkaSecurity.from_environment())
        uvloop.run(relay(kafka, sys.argv[3], sys.argv[4], f"relay-{sys.argv[3]}"))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60, help="closed-loop measuring window (s)")
    parser.add_argument("--warmup", type=float, default=15, help="closed-loop warm-up before measuring (s)")
    parser.add_argument("--open-duration", type=float, default=60, help="open-loop window (s)")
    parser.add_argument(
        "--open-share", type=float, default=0.5, help="open-loop rate as a share of closed-loop"
    )
    parser.add_argument("--transport-messages", type=int, default=100_000)
    parser.add_argument(
        "--transport-rounds", type=int, default=2, help="plain and secured chains, alternating, best of"
    )
    parser.add_argument(
        "--transport-only",
        action="store_true",
        help="only the bare transport, plain and secured, and their ratio (nothing is written)",
    )
    parser.add_argument(
        "--no-save",
        action="store_true",
        help="print the table only (profiling runs, short windows): no results file is written",
    )
    parser.add_argument(
        "--gateway-duration", type=float, default=20, help="HTTP gateway closed and open loop windows (s)"
    )
    parser.add_argument(
        "--gateway-only",
        action="store_true",
        help="only the HTTP gateway's requests/s and latency at half that rate (nothing is written)",
    )
    parser.add_argument(
        "--hops",
        type=float,
        metavar="RATE",
        help="instead: trace the fleet at RATE orders/s for --open-duration s and print where latency goes",
    )
    parser.add_argument(
        "--rates",
        metavar="R1,R2,...",
        help="instead: the fleet (untraced), then the bare chain, at each rate for --open-duration s",
    )
    args = parser.parse_args()
    if args.rates:
        loops = asyncio.run(rates_main(args))
        print(
            f"\nsubmit -> allocated (fleet, untraced) and {HOPS} hops of the bare chain, ms, by arrival rate:"
        )
        nan = float("nan")
        for loop in loops:
            fleet, bare = loop["fleet"]["allocated"], loop["bare_chain"]
            print(
                f"  {loop['rate_per_s']:7.1f}/s  fleet p50 {fleet.get('p50_ms', nan):7.1f}"
                f" p99 {fleet.get('p99_ms', nan):7.1f} ({fleet['completed']} of {loop['fleet']['orders']})"
                f"   bare chain p50 {bare.get('p50_ms', nan):7.1f} p99 {bare.get('p99_ms', nan):7.1f}"
                f"   fleet run: {loop['fleet']['machine_cores_busy']:.2f} of {machine()['cpus']} cores busy"
            )
            spent = loop["fleet"].get("cpu_ms_per_order", {})
            print(
                f"           CPU-ms per order: {sum(spent.values()):.1f} in all; "
                + ", ".join(f"{label} {ms:.1f}" for label, ms in spent.items())
            )
        return
    if args.gateway_only:
        gateway = asyncio.run(gateway_main(args))
        print(f"\nBaton HTTP gateway on {machine()['cpus']} cores ({machine()['id']})")
        print_gateway(gateway)
        return
    if args.hops:
        traced = asyncio.run(hops_main(args))
        print(f"\nwait before each hop and handler time, ms, at {args.hops} orders/s:")
        for name, figures in traced["hops"].items():
            print(
                f"  {name:58} p50 {figures.get('p50_ms', 0):8.1f}  p95 {figures.get('p95_ms', 0):8.1f}"
                f"  p99 {figures.get('p99_ms', 0):8.1f}  n {figures['n']}"
            )
        print("\neach hop's wait taken apart, p50 ms:")
        for name, figures in traced["hop_parts"].items():
            print(f"  {name}  (n {figures['n']})")
            for part in HOP_PARTS:
                print(f"      {part:40} {figures[part]:8.1f}")
        return
    RESULTS.mkdir(exist_ok=True)
    this_machine = machine()["id"]
    earlier = [json.loads(f.read_text()) for f in sorted(RESULTS.glob("*.json"))]
    same = [r for r in earlier if r.get("machine", {}).get("id") == this_machine and r.get("fleet")]
    previous = same[-1] if same else None
    global _phases
    with Phases(PHASES[:1] if args.transport_only else PHASES) as _phases:
        result = asyncio.run(main_async(args))
        _phases.finish()
    if args.transport_only:
        print(
            f"\nBaton transport {result['date']} on {result['machine']['cpus']} cores ({result['machine']['id']})"
        )
        print_transport(result)
        return
    print_table(result, previous, same[0] if same else None)
    if args.no_save:
        return
    out = RESULTS / f"{result['date']}.json"
    out.write_text(json.dumps(result, indent=2))
    chart(result, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
