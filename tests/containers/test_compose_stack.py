"""The Compose stack on Podman: images built here (no registry), Kafka from Maven's jars, PostgreSQL
from Debian's package, the topics and migrate jobs and the five services from the app image, each
logged in to PostgreSQL as its own role; an order placed from the host through the published Kafka
port goes to `delivered`, and the status API answers through its published port, to a key made
on the host with `baton api-keys add`. Run by `make test-containers`, never by `make test`."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiokafka.errors import KafkaError

from libs.contracts import topics
from libs.contracts.topics import SERVICES
from libs.platform.kafka import KafkaAccess, KafkaSecurity
from tests.containers.podman import ComposeStack, Podman, compose_images, remove_project
from tests.support.infra import free_port
from tests.support.kafka_io import Publisher, TopicWatcher
from tests.support.orders import adjustment, location, order, product, stage_update

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]


@dataclass
class Running:
    compose: ComposeStack
    bootstrap: str
    api: str


def record(timings: dict[str, float], sizes: dict[str, int]) -> None:
    """What the run cost, in ``<cache>/containers/last-run.json`` (conftest prints it at the end)."""
    (Podman().home / "last-run.json").write_text(json.dumps({"seconds": timings, "bytes": sizes}, indent=2))


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    """Images built (cached layers reused), then the stack started in dependency order, each step
    awaited by polling its readiness; everything labelled with the run's project is removed after."""
    podman = Podman()
    (podman.home / "last-run.json").unlink(missing_ok=True)
    remove_project(podman)  # leftovers of a run that was killed; the storage is this project's own
    timings: dict[str, float] = {}
    sizes: dict[str, int] = {}
    started = time.monotonic()
    base = podman.ensure_base_image()
    timings["base image (mmdebstrap, cached after the first run)"] = time.monotonic() - started
    for tag, dockerfile in compose_images():
        began = time.monotonic()
        podman.build(tag, dockerfile, base)
        timings[f"build {tag}"] = time.monotonic() - began
        sizes[tag] = podman.image_size(tag)

    kafka_port, api_port = free_port(), free_port()
    compose = ComposeStack(
        podman,
        project=f"baton-test-{secrets.token_hex(3)}",
        env={
            "BATON_KAFKA_HOST_PORT": str(kafka_port),
            "BATON_STATUS_API_PORT": str(api_port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        },
    )
    try:
        began = time.monotonic()
        compose.up("kafka", "postgres")
        compose.wait_healthy(["kafka", "postgres"], timeout=120)
        timings["kafka and postgres up"] = time.monotonic() - began
        began = time.monotonic()
        compose.up("topics")
        assert compose.wait_exit("topics", timeout=120) == 0, compose.logs("topics")
        timings["topics job"] = time.monotonic() - began
        began = time.monotonic()
        compose.up("migrate")
        assert compose.wait_exit("migrate", timeout=120) == 0, compose.logs("migrate")
        timings["migrate job"] = time.monotonic() - began
        began = time.monotonic()
        compose.up(*SERVICES)
        compose.wait_healthy(SERVICES, timeout=180)
        timings["five services up, every /readyz 200"] = time.monotonic() - began
        yield Running(compose, f"127.0.0.1:{kafka_port}", f"http://127.0.0.1:{api_port}")
    finally:
        began = time.monotonic()
        compose.teardown()
        timings["teardown"] = time.monotonic() - began
        record(timings, sizes)


@pytest.fixture
async def kafka(running: Running) -> AsyncIterator[tuple[Publisher, TopicWatcher]]:
    """A publisher and a watcher of `orders.status.v1` on the host, through the published port."""
    kafka = KafkaAccess(running.bootstrap, KafkaSecurity())
    admin = kafka.admin()
    deadline = time.monotonic() + 60
    while True:
        try:
            await admin.start()
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    await admin.close()
    publisher = Publisher(kafka, prefix="")
    status = TopicWatcher(kafka, topics.ORDERS_STATUS)
    await publisher.start()
    try:
        await status.start()
        try:
            yield publisher, status
        finally:
            await status.stop()
    finally:
        await publisher.stop()


async def wait_row(compose: ComposeStack, query: str, what: str, timeout: float = 60) -> None:
    """Until the query (run inside the PostgreSQL container) answers true."""
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(compose.sql, query) != "t":
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)


async def api_key(running: Running, channel: str) -> tuple[str, str]:
    """`baton api-keys add` on the host, through the published Kafka port; returns (key id, key)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATON_", "KAFKA_"))}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "libs.cli.main", "api-keys", "add", "--channel", channel, "--name", "test"],
        env=env | {"BATON_KAFKA_BOOTSTRAP_SERVERS": running.bootstrap},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    return fields["key_id"], fields["key"]


async def test_an_order_goes_to_delivered_through_the_containers_and_the_status_api_shows_it(
    running: Running, kafka: tuple[Publisher, TopicWatcher]
) -> None:
    publisher, status = kafka
    item = f"BOX-{secrets.token_hex(3)}"
    warehouse = f"wh-{item}"
    await publisher.send(topics.CATALOG_PRODUCTS, item, product(item, "10.00"))
    await publisher.send(topics.INVENTORY_LOCATIONS, warehouse, location(warehouse, lat=52.4, lon=13.1))
    await publisher.send(
        topics.INVENTORY_ADJUSTMENTS, item, adjustment(f"i-{item}", item, warehouse, delta=5)
    )
    await wait_row(
        running.compose, f"SELECT true FROM validation.products WHERE sku = '{item}'", "the product"
    )
    await wait_row(
        running.compose,
        f"SELECT true FROM allocation.adjustments WHERE adjustment_id = 'i-{item}'",
        "the stock adjustment",
    )

    submitted = order(lines=[(item, 1, "10.00")])
    await publisher.send(topics.ORDERS_SUBMITTED, f"webshop:{submitted['external_id']}", submitted)

    def reached(wanted: str) -> Any:
        def check(records: list[dict[str, Any]]) -> bool:
            return any(
                r.get("external_id") == submitted["external_id"] and r["status"] == wanted for r in records
            )

        return check

    # A warehouse learns a shipment from in_fulfillment (fulfillment holds it); `allocated` is
    # published by intake and can reach a reader before fulfillment has read the same fact, and an
    # update for a shipment fulfillment does not know yet is dead-lettered (unknown_shipment).
    await status.wait_for(reached("in_fulfillment"), 90, "the order to be in fulfillment")
    placed = next(
        r
        for r in status.records
        if r.get("external_id") == submitted["external_id"] and r["status"] == "in_fulfillment"
    )
    order_id, shipment_id = placed["order_id"], placed["shipments"][0]["shipment_id"]
    for stage in ("picking", "packed", "shipped", "delivered"):
        update = stage_update(shipment_id, stage)
        if stage == "shipped":
            update |= {"carrier": "DHL", "tracking_number": "JJD0042"}
        await publisher.send(topics.FULFILLMENT_UPDATES, shipment_id, update)
    await status.wait_for(reached("delivered"), 90, "the order to be delivered")

    key_id, key = await api_key(running, "webshop")
    await wait_row(
        running.compose, f"SELECT true FROM notification.api_keys WHERE key_id = '{key_id}'", "the API key"
    )
    view: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        # The view folds status events and stage events as each arrives: wait for both to be in.
        def shown(view: dict[str, Any]) -> bool:
            tracked = [s.get("tracking_number") for s in view.get("shipments", [])]
            return view.get("status") == "delivered" and tracked == ["JJD0042"]

        while not shown(view):
            assert time.monotonic() < deadline, f"the status API never showed delivered with tracking: {view}"
            async with http.get(f"{running.api}/orders/{order_id}") as response:
                view = await response.json() if response.status == 200 else {}
            if not shown(view):
                await asyncio.sleep(0.3)
    assert view["external_id"] == submitted["external_id"]
    assert view["shipments"][0]["tracking_number"] == "JJD0042"
    assert [e["event"]["status"] for e in view["timeline"] if e["kind"] == "status"] == [
        "received",
        "validated",
        "allocated",
        "in_fulfillment",
        "shipped",
        "delivered",
    ]


def test_each_service_container_logs_in_to_postgresql_as_its_own_role(running: Running) -> None:
    """The migrate job made the roles; no service uses the migrator (the image's superuser)."""
    rows = running.compose.sql(
        "SELECT string_agg(DISTINCT application_name || '=' || usename, ',')"
        " FROM pg_stat_activity WHERE application_name LIKE 'baton-%'"
    )
    roles = dict(row.split("=", 1) for row in rows.split(",") if row)
    assert roles == {f"baton-{service}": f"baton_{service}" for service in SERVICES}, rows
