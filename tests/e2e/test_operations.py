"""What SREs rely on, on the real fleet: one trace per order across all five services, metrics and
health endpoints on every process, and `baton trace` / `baton top` working against it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from libs.cli.traces import load_order_spans, services_in
from libs.contracts.topics import SERVICES
from libs.platform.tracing import order_trace_id
from tests.e2e.conftest import SERVICES_TO_RUN, LiveFleet
from tests.e2e.test_notification import Receiver, remove_subscription, subscribe
from tests.support.orders import adjustment, location, order, product
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(10)) as r:
        return r.status, await r.text()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        v for (n, ls), v in samples.items() if n == name and all((k, lv) in ls for k, lv in labels.items())
    )


async def _delivered_order(live: LiveFleet) -> dict[str, Any]:
    item = sku("TRACE")
    wh = f"wh-{item}"
    await live.seed(
        products=[product(item)],
        locations=[location(wh, lat=52.4, lon=13.1)],
        adjustments=[adjustment(f"i-{item}", item, wh, delta=3)],
    )
    external_id = await live.submit(order(lines=[(item, 1, "10.00")]))
    status = await live.wait_status(external_id, "in_fulfillment")
    shipment_id = status["shipments"][0]["shipment_id"]
    for stage in ("picking", "packed"):
        await live.move(shipment_id, stage)
    await live.move(shipment_id, "shipped", carrier="DHL", tracking_number="TR0001")
    await live.move(shipment_id, "delivered")
    return await live.wait_status(external_id, "delivered")


def _spans_in(trace_dir: Path) -> list[dict[str, Any]]:
    spans = []
    for path in sorted(trace_dir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written right now
                spans.append(json.loads(line))
    return spans


async def test_one_order_is_one_trace_across_all_five_services(live: LiveFleet) -> None:
    receiver = Receiver()
    await receiver.start()
    hook = f"trace-{uuid.uuid4().hex[:8]}"
    try:
        await subscribe(live, hook, receiver.url(hook), "order.delivered")
        delivered = await _delivered_order(live)
        order_id = delivered["order_id"]
        trace_id = f"{order_trace_id(order_id):032x}"

        def warehouse_updates(spans: list[dict[str, Any]]) -> int:
            return sum(
                1
                for s in spans
                if s["service"] == "baton-fulfillment"
                and s["attributes"].get("messaging.destination.name", "").endswith("fulfillment.updates.v1")
            )

        def outside(spans: list[dict[str, Any]]) -> set[str]:
            """The parents named that are not spans of the trace."""
            ids = {s["span_id"] for s in spans}
            return {s["parent_id"] for s in spans if s["parent_id"] not in ids}

        def complete(spans: list[dict[str, Any]]) -> bool:
            names = {s["name"] for s in spans}
            return (
                services_in(spans) >= set(SERVICES)
                and warehouse_updates(spans) >= 4
                and {"SMTP send", "POST"} <= names
                and len(outside(spans)) <= 1
            )

        # Each process exports its spans in the background every half second, a child often in an
        # earlier export than its parent: wait until the spans of all five services, the four
        # warehouse updates, an e-mail and the webhook are on disk, and every parent but the order.
        deadline = time.monotonic() + 60
        spans: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            spans = load_order_spans(live.trace_dir, order_id)
            if complete(spans):
                break
            await asyncio.sleep(0.3)
    finally:
        await remove_subscription(live, hook)
        await receiver.stop()
    assert services_in(spans) >= set(SERVICES), f"services in the trace: {services_in(spans)}"
    # Every service computed the order's trace id from its id on its own.
    assert {s["trace_id"] for s in spans} == {trace_id}
    by_id = {s["span_id"]: s for s in spans}
    # The hops are parent/child links, not just a shared id: validation's span descends from intake's.
    validation = next(s for s in spans if s["service"] == "baton-validation" and s["kind"] == "CONSUMER")
    parent = by_id.get(validation["parent_id"])
    assert parent is not None and parent["service"] == "baton-intake"
    assert validation["attributes"]["messaging.operation.type"] == "process"
    assert ".baton.validation." in validation["attributes"]["messaging.consumer.group.name"]
    # Only the order itself (the trace's implicit root) is a parent that is not a span of the trace.
    assert len(outside(spans)) == 1, [(s["service"], s["name"]) for s in spans if s["parent_id"] not in by_id]
    # The warehouse's four updates carried no context, yet they are in the order's trace too.
    assert warehouse_updates(spans) == 4
    # Database calls made while a record was handled, the e-mails and the webhook are in it as well.
    assert any(s["kind"] == "CLIENT" and s["attributes"].get("db.system.name") == "postgresql" for s in spans)
    post = next(s for s in spans if s["name"] == "POST")
    assert receiver.url(hook) not in json.dumps(post)  # the URL is cut to its origin
    (request,) = [r for r in receiver.received[hook] if b"delivered" in r["body"]]
    assert trace_id in {k.lower(): v for k, v in request["headers"].items()}["traceparent"]
    # Each record's traceparent names a span that exists, and a relay round sent it, linked to it.
    intake = next(s for s in spans if s["service"] == "baton-intake" and s["kind"] == "CONSUMER")
    sends = [s for s in _spans_in(live.trace_dir) if s["kind"] == "PRODUCER" and s["name"].startswith("send")]
    assert any(link["span_id"] == intake["span_id"] for send in sends for link in send["links"])
    assert not any(s["name"].startswith("send") for s in spans)  # relay rounds are linked, not in the tree

    printed = subprocess.run(
        [sys.executable, "-m", "libs.cli.main", "trace", order_id, "--trace-dir", str(live.trace_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for service in SERVICES:
        assert f"baton-{service}" in printed
    assert "database calls hidden" in printed and "SMTP send" in printed


async def test_every_process_serves_health_and_metrics_with_domain_counters(live: LiveFleet) -> None:
    # The shared fleet's six processes (a test may have added a gateway of its own, and stopped it).
    labels = {label for _, label in SERVICES_TO_RUN}
    ports = {label: port for label, port in live.fleet.ops_ports.items() if label in labels}
    assert set(ports) == labels

    async def scrape(label: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, text = await _get(f"http://127.0.0.1:{ports[label]}/metrics")
        assert code == 200
        return _samples(text)

    # Counters live as long as the processes, which other tests share: compare before and after.
    before = {label: await scrape(label) for label in ports}
    await _delivered_order(live)
    for label, port in ports.items():
        assert (await _get(f"http://127.0.0.1:{port}/livez"))[0] == 200, label
        # Ready once every input's consumer has fetched (after its group's rebalance settles).
        deadline = time.monotonic() + 60
        while (answer := await _get(f"http://127.0.0.1:{port}/readyz"))[0] != 200:
            assert time.monotonic() < deadline, (label, answer)
            await asyncio.sleep(0.5)
        assert '"kafka": true' in answer[1] and '"database": true' in answer[1]

    async def grew(labels: tuple[str, ...], name: str, **match: str) -> bool:
        """The counter summed over ``labels`` went up since ``before`` (waits for background work)."""
        deadline = time.monotonic() + 30
        while True:
            now = sum([_total(await scrape(label), name, **match) for label in labels])
            if now > sum(_total(before[label], name, **match) for label in labels):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)

    assert await grew(("intake",), "baton_order_status_total", status="received")
    assert await grew(("intake",), "baton_order_status_total", status="delivered")
    assert await grew(("intake",), "baton_order_status_latency_seconds_count", status="allocated")
    assert await grew(("intake",), "baton_records_total", service="intake", outcome="applied")
    intake = await scrape("intake")
    assert any(n == "baton_outbox_pending_rows" for n, _ in intake)
    assert any(n == "baton_consumer_lag" and ("service", "intake") in ls for n, ls in intake)
    assert await grew(("validation",), "baton_validation_decisions_total", decision="validated")
    assert await grew(("allocation.1", "allocation.2"), "baton_reservations_total", outcome="allocated")
    assert await grew(("fulfillment",), "baton_stage_changes_total", stage="delivered", change="moved")
    assert await grew(("notification",), "baton_emails_total", outcome="sent")


async def test_baton_top_shows_every_consumer_group_with_its_lag(live: LiveFleet) -> None:
    env = live.fleet.env
    printed = subprocess.run(
        [sys.executable, "-m", "libs.cli.main", "top", "--iterations", "2", "--interval", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    ).stdout
    for service in SERVICES:
        assert f"baton.{service}." in printed, printed
    assert "dead letters" in printed
    assert "rec/s" in printed
    # Run as the read-only operator role (the fleet's CLI environment): every outbox and every
    # schema's durable timers are readable.
    backlog = printed.split("outbox waiting")[-1]
    for service in SERVICES:
        [line] = [row for row in backlog.splitlines() if row.startswith(service)]
        _, _, outbox, timers, _ = line.split()
        assert outbox.isdigit(), f"{service}'s outbox backlog unreadable: {line}"
        assert timers.isdigit(), f"{service}'s timers unreadable: {line}"


async def test_each_service_process_logs_in_as_its_own_database_role(live: LiveFleet) -> None:
    """As deployed: no process shares a role, none uses the migrator's."""
    roles = await live.database_roles()
    assert roles == live.own_roles()
    assert len(set(roles.values())) == len(SERVICES)
