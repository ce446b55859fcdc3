"""Personal data end to end: a customer's orders flow through the fleet (validated and allocated,
one held, e-mails sent); `baton privacy erase` erases the customer from every service, each
service reports it once, no table of any schema and no log line or span holds the customer's name,
e-mail or address any more, another customer's data stays, and an order placed afterwards is kept."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from libs.contracts import topics
from libs.contracts.topics import SERVICES
from libs.contracts.topology import erasers
from tests.e2e.conftest import LiveFleet
from tests.support.infra import Infra
from tests.support.kafka_io import TopicWatcher
from tests.support.orders import adjustment, location, order, product

pytestmark = pytest.mark.e2e

TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb", "bytea", "ARRAY")


def person(tag: str) -> dict[str, Any]:
    """A customer whose every personal value is unique to this run, so a match is this customer's."""
    return {
        "customer": {"id": f"cust-{tag}", "email": f"erin.{tag}@example.org", "name": f"Erin Eraseme {tag}"},
        "shipping_address": {
            "name": f"Erin E. Eraseme {tag}",
            "line1": f"{tag} Privacy Lane 9",
            "line2": f"Flat {tag}",
            "city": f"Erasetown {tag}",
            "postal_code": f"PC-{tag}",
            "country": "DE",
            "lat": 52.52,
            "lon": 13.405,
        },
    }


def personal_strings(who: dict[str, Any]) -> list[str]:
    address = who["shipping_address"]
    return [
        who["customer"]["email"],
        who["customer"]["name"],
        *(address[k] for k in ("name", "line1", "line2", "city", "postal_code")),
    ]


async def where_found(dsn: str, needles: list[str]) -> list[str]:
    """Every `schema.table.column` of every service's schema whose text, JSON, bytes or array
    values contain one of ``needles`` (read as the migrator, who reads every schema)."""
    conn = await asyncpg.connect(dsn)
    try:
        columns = await conn.fetch(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns"
            " JOIN information_schema.tables USING (table_schema, table_name)"
            " WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE' AND data_type = ANY($2::text[])",
            list(SERVICES),
            list(TEXT_TYPES),
        )
        assert {c["table_schema"] for c in columns} == set(SERVICES), "every schema is scanned"
        found = []
        for c in columns:
            column = f'"{c["column_name"]}"'
            text = f"encode({column}, 'escape')" if c["data_type"] == "bytea" else f"{column}::text"
            hit = await conn.fetchval(
                f'SELECT EXISTS (SELECT 1 FROM "{c["table_schema"]}"."{c["table_name"]}"'
                f" WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) AS n WHERE strpos({text}, n) > 0))",
                needles,
            )
            if hit:
                found.append(f"{c['table_schema']}.{c['table_name']}.{c['column_name']}")
        return sorted(found)
    finally:
        await conn.close()


def files_mentioning(folder: Path, needles: list[str]) -> list[str]:
    """Lines of the files under ``folder`` (logs, trace files) that contain one of ``needles``."""
    hits = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        for line in path.read_text(errors="replace").splitlines():
            if any(n in line for n in needles):
                hits.append(f"{path.name}: {line[:300]}")
    return hits


def baton(live: LiveFleet, *args: str) -> subprocess.CompletedProcess[str]:
    """A `baton` command as the operator (its database role and, when secured, its Kafka principal)."""
    return subprocess.run(
        [sys.executable, "-m", "libs.cli.main", *args],
        env=live.fleet.env,
        capture_output=True,
        text=True,
        timeout=180,
    )


async def wait_until_sent(live: LiveFleet, *order_ids: str) -> None:
    await live.wait_row(
        "SELECT count(DISTINCT order_id) = $2 FROM notification.emails"
        " WHERE order_id = ANY($1::uuid[]) AND state = 'sent'",
        [UUID(o) for o in order_ids],
        len(order_ids),
        timeout=90,
        what="the received e-mails sent",
    )


async def settled(dsn: str, needles: list[str], expected: list[str], timeout: float = 60) -> list[str]:
    """Where ``needles`` are found, once that is ``expected`` (an outbox row on its way to Kafka
    may hold an order for a moment); what was found last, after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = await where_found(dsn, needles)
        if found == expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(1.0)


async def test_erasing_a_customer_leaves_no_trace_of_them_in_any_table_log_or_span_and_keeps_others(
    live: LiveFleet, e2e_infra: Infra
) -> None:
    tag = secrets.token_hex(4)
    erin, other = person(tag), person(secrets.token_hex(4))
    item = f"PRIV-{tag}"
    await live.seed(
        products=[product(item, price="600.00")],
        locations=[location(f"wh-{tag}", lat=52.5, lon=13.4)],
        adjustments=[adjustment(f"adj-{tag}", item, f"wh-{tag}", delta=20)],
    )
    before = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()

    def placed(external_id: str, who: dict[str, Any], quantity: int, at: str = before) -> dict[str, Any]:
        return order(external_id, lines=[(item, quantity, "600.00")]) | who | {"placed_at": at}

    held = await live.submit(placed(f"held-{tag}", erin, 2))  # a first-time customer above the threshold
    await live.wait_status(held, "on_hold")
    allocated = await live.submit(placed(f"alloc-{tag}", erin, 1))
    kept = await live.submit(placed(f"kept-{tag}", other, 1))
    ids = {x: (await live.wait_status(x, "allocated"))["order_id"] for x in (allocated, kept)}
    ids[held] = next(r["order_id"] for r in live.history(held))
    await wait_until_sent(live, *ids.values())

    erins, others = personal_strings(erin), personal_strings(other)
    keepers = ["intake.orders.details", "notification.customers.email", "notification.customers.name"]
    assert set(keepers) | {
        "validation.held_orders.order_details",
        "allocation.allocations.order_details",
    } <= set(await where_found(live.dsn, erins)), "the scan finds what the services keep"
    assert "validation.customer_daily_units.customer_key" in await where_found(
        live.dsn, [erin["customer"]["id"]]
    ), "validation keeps daily units (the fleet runs a rule that uses them)"

    request = f"erasure-{tag}"
    erase = await asyncio.to_thread(
        baton, live, "privacy", "erase", "--customer", erin["customer"]["id"], "--channel", "webshop",
        "--request-id", request,
    )  # fmt: skip
    assert erase.returncode == 0, erase.stderr
    assert erase.stdout.strip() == request
    status = await asyncio.to_thread(baton, live, "privacy", "status", request, "--wait", "120")
    assert status.returncode == 0, status.stdout + status.stderr
    reported = {line.split()[0]: line for line in status.stdout.splitlines()}
    assert set(reported) == set(erasers()) == {"intake", "validation", "allocation", "notification"}
    assert "orders=2" in reported["intake"] and "orders=1" in reported["validation"]

    gone = [*erins, erin["customer"]["id"]]
    assert await settled(live.dsn, gone, []) == [], "nothing of the customer is left, their id neither"
    found_others = await where_found(live.dsn, others)
    assert {
        "intake.orders.details",
        "allocation.allocations.order_details",
        "notification.customers.email",
    } <= set(found_others), "another customer's data is untouched"

    # The held order released after the erasure goes on erased: allocated, still no trace.
    await live.publisher.send(
        topics.ORDERS_HOLD_DECISIONS,
        ids[held],
        {"order_id": ids[held], "decision": "release", "decided_by": "support"},
    )
    await live.wait_status(held, "allocated")

    # The same request again changes nothing and is not reported again; a later request is.
    outcomes = TopicWatcher(e2e_infra.kafka, live.prefix + topics.PRIVACY_ERASURES)
    await outcomes.start()
    try:
        again = await asyncio.to_thread(
            baton, live, "privacy", "erase", "--customer", erin["customer"]["id"], "--request-id", request
        )
        assert again.returncode == 0, again.stderr
        sentinel = (
            await asyncio.to_thread(baton, live, "privacy", "erase", "--customer", f"nobody-{tag}")
        ).stdout.strip()
        await outcomes.wait_for(
            lambda rs: {r["service"] for r in rs if r.get("request_id") == sentinel} == set(erasers()),
            120,
            "the later request applied by every service",
        )
        reports = [(r["service"], r["orders"]) for r in outcomes.records if r.get("request_id") == request]
        assert sorted(reports) == sorted(
            [("intake", 2), ("validation", 1), ("allocation", 1), ("notification", 2)]
        ), "each service reported the request once"
    finally:
        await outcomes.stop()
    assert await settled(live.dsn, gone, []) == []

    # An order the customer places after the request is a new order: kept.
    after = await live.submit(placed(f"after-{tag}", erin, 1, at=datetime.now(UTC).isoformat()))
    await live.wait_status(after, "allocated")
    assert "intake.orders.details" in await where_found(live.dsn, [erin["customer"]["email"]])

    assert live.fleet.log_dir is not None
    assert files_mentioning(live.fleet.log_dir, erins + others) == [], "no log line names a customer"
    assert files_mentioning(live.trace_dir, erins + others) == [], "no span names a customer"
