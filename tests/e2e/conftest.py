"""One real fleet for the end-to-end tests: every service a separate process, on fresh topics and database.

``live`` runs on the plain broker, or on the secured one with ``BATON_E2E_KAFKA=secure`` (each
service as its own principal, least privilege). ``secure_live`` is always the secured fleet: the
tests written for it run in every ``make test``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from libs.contracts import topics
from libs.platform.dsn import user_name
from tests.support.fleet import Fleet
from tests.support.infra import Infra, free_port, fresh_environment
from tests.support.kafka_io import Publisher, TopicWatcher
from tests.support.mail import MailBox
from tests.support.orders import adjustment, location, product, stage_update

SLA_CHANNEL = "sla-e2e"
"""Orders of this channel go through a pipeline whose first stage has a deadline of seconds."""


def pipelines_with_a_short_deadline(folder: Path) -> Path:
    """The packaged pipelines, behind one selected by ``SLA_CHANNEL`` whose `new` stage is late after
    3.6 seconds (`sla_hours: 0.001`) and whose parcels must ship within 7.2 (`ship_by_hours: 0.002`):
    the SLA tests see breaches without waiting hours, and every other order takes the packaged
    pipelines."""
    packaged = yaml.safe_load(resources.files("services.fulfillment").joinpath("pipelines.yaml").read_text())
    quick = {
        "name": "sla-e2e",
        "select": {"channel": SLA_CHANNEL},
        "ships_at": "shipped",
        "ship_by_hours": 0.002,
        "stages": [
            {"name": "new", "hours": 0.001, "sla_hours": 0.001},
            {"name": "picking", "hours": 1},
            {"name": "shipped", "hours": 1},
            {"name": "delivered", "hours": 0},
        ],
    }
    path = folder / "pipelines.yaml"
    path.write_text(yaml.safe_dump(packaged | {"pipelines": [quick, *packaged["pipelines"]]}))
    return path


SERVICES_TO_RUN = [
    ("intake", "intake"),
    ("validation", "validation"),
    ("allocation", "allocation.1"),
    ("allocation", "allocation.2"),
    ("fulfillment", "fulfillment"),
    ("notification", "notification"),
]

DAILY_UNITS_RULE = {
    "PYTHONPATH": str(Path(__file__).parents[1] / "plugins/baton-rules-example/src"),
    "BATON_VALIDATION_RULES": "baton_rules_example:limited_sku_daily_limit",
}
"""Validation's extra settings in the shared fleet: a plugin rule that uses daily units (it only
limits `LTD-...` SKUs), so validation keeps units per customer, as a shop with such a rule would,
and the privacy test sees that erasure covers them."""


@dataclass
class LiveFleet:
    fleet: Fleet
    publisher: Publisher
    status: TopicWatcher
    refused: TopicWatcher
    dead_letters: TopicWatcher
    """intake's dead-letter topic"""
    fulfillment_dead_letters: TopicWatcher
    notification_dead_letters: TopicWatcher
    stages: TopicWatcher
    cancellations: TopicWatcher
    dsn: str
    prefix: str
    mailbox: MailBox
    api: str
    trace_dir: Path
    webhook_key: str
    """The fleet's ``BATON_WEBHOOK_SECRETS_KEY`` (the CLI, run with ``fleet.env``, has it too)."""

    async def submit(self, order: dict[str, Any]) -> str:
        await self.publisher.send(
            topics.ORDERS_SUBMITTED, f"{order['channel']}:{order['external_id']}", order
        )
        return str(order["external_id"])

    async def wait_status(self, external_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until the order has reached ``status`` (it may have moved on since); returns that event."""

        def reached(records: list[dict[str, Any]]) -> bool:
            return any(r.get("external_id") == external_id and r.get("status") == status for r in records)

        await self.status.wait_for(reached, timeout, f"{external_id} to become {status}")
        return max(
            (r for r in self.status.records if r.get("external_id") == external_id and r["status"] == status),
            key=lambda r: r["version"],
        )

    async def move(self, shipment_id: str, stage: str, **kwargs: Any) -> None:
        await self.publisher.send(
            topics.FULFILLMENT_UPDATES, shipment_id, stage_update(shipment_id, stage, **kwargs)
        )

    async def cancel(
        self, order_id: str, request_id: str, lines: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"request_id": request_id, "order_id": order_id, "reason": "customer asked"}
        if lines is not None:
            body["lines"] = lines
        await self.publisher.send(topics.ORDERS_CANCEL_REQUESTED, order_id, body)
        await self.cancellations.wait_for(
            lambda rs: any(r.get("request_id") == request_id for r in rs),
            60,
            f"the outcome of cancel request {request_id}",
        )
        return next(r for r in self.cancellations.records if r.get("request_id") == request_id)

    def stage_events(self, order_id: str) -> list[tuple[str, str | None, str | None, str]]:
        return [
            (r["pipeline"], r["left_stage"], r["entered_stage"], r["change"])
            for r in self.stages.records
            if r.get("order_id") == order_id
        ]

    def history(self, external_id: str) -> list[dict[str, Any]]:
        return sorted(
            (r for r in self.status.records if r.get("external_id") == external_id),
            key=lambda r: r["version"],
        )

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def database_roles(self) -> dict[str, str]:
        """Service -> the database role its processes are logged in as (from pg_stat_activity)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT DISTINCT application_name, usename FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE 'baton-%'"
            )
        finally:
            await conn.close()
        return {r["application_name"].removeprefix("baton-"): r["usename"] for r in rows}

    def own_roles(self) -> dict[str, str | None]:
        """Service -> the role it was given (its own, as deployed)."""
        return {s: user_name(self.fleet.database_urls[s]) for s in topics.SERVICES}

    async def wait_row(self, sql: str, *args: Any, timeout: float = 60, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.fetchval(sql, *args)
            except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or sql}")
            await asyncio.sleep(0.2)

    async def baton(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A `baton` command as the operator would run it (the operator's Kafka and database logins)."""
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "libs.cli.main", *args],
            env=self.fleet.env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 0, result.stderr
        return result

    async def api_key(self, *channels: str, name: str = "e2e", role: str = "viewer") -> tuple[str, str]:
        """A status API key for ``channels`` (`*`: all) with ``role`` made by `baton api-keys add`, once
        notification has it; returns (key id, key)."""
        scope = ["--all"] if channels == ("*",) else [a for c in channels for a in ("--channel", c)]
        printed = (await self.baton("api-keys", "add", *scope, "--name", name, "--role", role)).stdout
        fields = dict(line.split(": ", 1) for line in printed.splitlines() if ": " in line)
        key_id, key = fields["key_id"], fields["key"]
        await self.wait_row("SELECT true FROM notification.api_keys WHERE key_id = $1", key_id, what=key_id)
        return key_id, key

    async def seed(
        self,
        *,
        products: Sequence[dict[str, Any]] = (),
        locations: Sequence[dict[str, Any]] = (),
        adjustments: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Publish reference data and wait until the owning services applied it."""
        for p in products:
            await self.publisher.send(topics.CATALOG_PRODUCTS, p["sku"], p)
        for loc in locations:
            await self.publisher.send(topics.INVENTORY_LOCATIONS, loc["location_id"], loc)
        for adj in adjustments:
            await self.publisher.send(topics.INVENTORY_ADJUSTMENTS, adj["sku"], adj)
        for p in products:
            await self.wait_row(
                "SELECT true FROM validation.products WHERE sku = $1 AND price = $2::numeric",
                p["sku"],
                p["price"],
                what=f"product {p['sku']}",
            )
        for loc in locations:
            await self.wait_row(
                "SELECT true FROM allocation.locations WHERE location_id = $1 AND active = $2",
                loc["location_id"],
                loc["active"],
                what=f"location {loc['location_id']}",
            )
        for adj in adjustments:
            await self.wait_row(
                "SELECT true FROM allocation.adjustments WHERE adjustment_id = $1",
                adj["adjustment_id"],
                what=f"adjustment {adj['adjustment_id']}",
            )


@pytest.fixture(scope="session")
def e2e_infra(request: pytest.FixtureRequest, infra: Infra) -> Infra:
    """The broker the e2e tier runs on: the plain one, or the secured one with BATON_E2E_KAFKA=secure."""
    if os.environ.get("BATON_E2E_KAFKA", "plain") == "secure":
        secured: Infra = request.getfixturevalue("secure_infra")
        return secured
    return infra


@pytest.fixture(scope="session")
async def live(e2e_infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveFleet]:
    async with running_fleet(e2e_infra, tmp_path_factory) as fleet:
        yield fleet


@pytest.fixture(scope="module")
async def secure_live(
    secure_infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveFleet]:
    """The fleet on the secured broker: each service logs in as itself and may do only what its ACLs
    grant (no topic creation); the CLI (``fleet.env``) is the operator; the test's own clients the admin.
    Per module, so its processes do not idle on the cores for the rest of the session."""
    async with running_fleet(secure_infra, tmp_path_factory) as fleet:
        yield fleet


@contextlib.asynccontextmanager
async def running_fleet(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory, extra_env: dict[str, str] | None = None
) -> AsyncIterator[LiveFleet]:
    """``extra_env``: what every process gets besides (e.g. ``BATON_CHANNELS_FILE``)."""
    # Each service logs in as its own database role and (on the secured broker) its own Kafka
    # principal; the CLI commands the tests run are the read-only operator on both.
    environment = await fresh_environment(infra)
    settings, prefix = environment.settings, environment.prefix
    mailbox = MailBox()
    mailbox.start()
    http_port = free_port()
    log_dir = Path(tmp_path_factory.mktemp("fleet-logs"))
    trace_dir = Path(tmp_path_factory.mktemp("traces"))
    fleet = environment.fleet(log_dir, {"BATON_TRACE_DIR": str(trace_dir)} | (extra_env or {}))
    watchers = [
        TopicWatcher(infra.kafka, settings.topic(t))
        for t in (
            topics.ORDERS_STATUS,
            topics.ORDERS_REFUSED,
            topics.dead_letter_topic("intake"),
            topics.FULFILLMENT_STAGE_CHANGES,
            topics.ORDERS_CANCELLATIONS,
            topics.dead_letter_topic("fulfillment"),
            topics.dead_letter_topic("notification"),
        )
    ]
    publisher = Publisher(infra.kafka, prefix)
    try:
        for service, label in SERVICES_TO_RUN:
            extra: dict[str, str] = {}
            if service == "validation":
                extra = dict(DAILY_UNITS_RULE)
            if service == "notification":
                extra = {
                    "BATON_SMTP_PORT": str(mailbox.port),
                    "BATON_HTTP_PORT": str(http_port),
                    "BATON_WEBHOOK_BACKOFF_BASE_S": "0.2",
                    "BATON_WEBHOOK_MAX_ATTEMPTS": "4",
                    "BATON_WEBHOOK_TIMEOUT_S": "2",
                    # The tests' receivers listen on 127.0.0.1; nothing else internal is reached.
                    "BATON_WEBHOOK_ALLOWED_CIDRS": "127.0.0.1/32",
                    # The board's columns and deadlines: the pipelines fulfillment runs.
                    "BATON_PIPELINES_FILE": str(pipelines_with_a_short_deadline(log_dir)),
                }
            if service == "fulfillment":
                extra = {"BATON_PIPELINES_FILE": str(pipelines_with_a_short_deadline(log_dir))}
            fleet.start(service, label, extra)
        await publisher.start()
        for watcher in watchers:
            await watcher.start()
        (
            status,
            refused,
            dead_letters,
            stages,
            cancellations,
            fulfillment_dead_letters,
            notification_dead_letters,
        ) = watchers
        live_fleet = LiveFleet(
            fleet,
            publisher,
            status=status,
            refused=refused,
            dead_letters=dead_letters,
            fulfillment_dead_letters=fulfillment_dead_letters,
            notification_dead_letters=notification_dead_letters,
            stages=stages,
            cancellations=cancellations,
            dsn=environment.dsn,
            prefix=prefix,
            mailbox=mailbox,
            api=f"http://127.0.0.1:{http_port}",
            trace_dir=trace_dir,
            webhook_key=environment.webhook_key,
        )
        await live_fleet.wait_row(
            "SELECT count(*) = 3 FROM pg_namespace WHERE nspname IN ('intake', 'validation', 'allocation')",
            timeout=90,
            what="service schemas",
        )
        yield live_fleet
        fleet.assert_alive()
    finally:
        for watcher in watchers:
            await watcher.stop()
        await publisher.stop()
        fleet.stop()
        mailbox.stop()
        await environment.drop()


__all__ = ["LiveFleet", "adjustment", "location", "product"]
