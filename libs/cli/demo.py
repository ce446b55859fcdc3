"""`baton demo`: seed a shop, play a channel at a chosen rate, and show orders by status as they flow.

On a terminal the view is redrawn in place (orders submitted against the plan, orders by status,
shipments by pipeline stage); piped, it prints two plain lines a second."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from libs.cli import output
from libs.contracts import topics
from libs.platform.kafka import apply_topics
from libs.platform.settings import BatonSettings
from libs.simulators.sender import ResilientSender
from libs.simulators.warehouse import WarehouseFloor
from libs.simulators.world import Shop, demo_shop, random_order

STATUS_ORDER = [
    "received",
    "validated",
    "on_hold",
    "rejected",
    "allocated",
    "backordered",
    "in_fulfillment",
    "ready_for_pickup",
    "shipped",
    "delivered",
    "cancelled",
]


async def publish_shop(sender: ResilientSender, settings: BatonSettings, shop: Shop) -> None:
    """Catalog, locations and stock counts, each acknowledged by the broker."""
    sends = [
        sender.send(settings.topic(topics.CATALOG_PRODUCTS), orjson.dumps(p), p["sku"]) for p in shop.products
    ]
    sends += [
        sender.send(settings.topic(topics.INVENTORY_LOCATIONS), orjson.dumps(loc), loc["location_id"])
        for loc in shop.locations
    ]
    sends += [
        sender.send(settings.topic(topics.INVENTORY_ADJUSTMENTS), orjson.dumps(adj), adj["sku"])
        for adj in shop.stock
    ]
    await asyncio.gather(*sends)


class StatusBoard:
    """Latest status per order, from the public status topic only."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, str]] = {}

    def apply(self, event: dict[str, Any]) -> None:
        order_id, version = event.get("order_id"), event.get("version", 0)
        if order_id and version > self.latest.get(order_id, (0, ""))[0]:
            self.latest[order_id] = (version, event["status"])

    def counts(self) -> Counter[str]:
        return Counter(status for _, status in self.latest.values())


class StageBoard:
    """Shipments per (pipeline, stage), from the public stage events only."""

    def __init__(self) -> None:
        self.where: dict[str, str] = {}

    def apply(self, event: dict[str, Any]) -> None:
        if event.get("change") == "left":
            self.where.pop(event["shipment_id"], None)
        elif event.get("entered_stage"):
            self.where[event["shipment_id"]] = f"{event['pipeline']}/{event['entered_stage']}"

    def counts(self) -> list[tuple[str, int]]:
        return sorted(Counter(self.where.values()).items())

    def line(self) -> str:
        return "  ".join(f"{k} {v}" for k, v in self.counts())


@dataclass
class Channel:
    """How many orders the channel has submitted so far, of how many it plans to."""

    planned: int
    sent: int = 0


class DemoView:
    """What the demo shows each second: a live view on a terminal, two plain lines otherwise."""

    def __init__(self, channel: Channel, out: Console | None = None) -> None:
        self._channel = channel
        self._out = out or output.console()
        self._live: Live | None = None
        self._submitted = Progress(
            TextColumn("orders submitted"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._out,
        )
        self._task = self._submitted.add_task("submitted", total=channel.planned)
        if self._out.is_terminal:
            self._live = Live(console=self._out, auto_refresh=False)
            self._live.start()

    def show(self, elapsed: float, board: StatusBoard, stages: StageBoard) -> None:
        counts = board.counts()
        if self._live is None:
            line = "  ".join(f"{s} {counts[s]}" for s in STATUS_ORDER if counts[s])
            print(f"[{elapsed:5.0f}s] orders {len(board.latest):5d} | {line}", flush=True)
            print(f"         in pipelines | {stages.line()}", flush=True)
            return
        channel = self._channel  # the last order may go out just as the time is up: one over the plan
        self._submitted.update(self._task, completed=channel.sent, total=max(channel.planned, channel.sent))
        statuses = output.table("status", "orders>")
        for status in STATUS_ORDER:
            if counts[status]:
                output.add_row(statuses, status, counts[status])
        shipments = output.table("pipeline/stage", "shipments>")
        for where, n in stages.counts():
            output.add_row(shipments, where, n)
        title = Text(f"baton demo: {len(board.latest)} orders seen (Ctrl-C stops)", style="bold")
        self._live.update(Group(title, self._submitted, statuses, shipments), refresh=True)

    def say(self, message: str) -> None:
        (self._live.console if self._live else self._out).print(message)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


async def run_demo(
    settings: BatonSettings,
    rate: float,
    duration: float,
    run_id: str,
    healthy: Callable[[], bool] = lambda: True,
) -> Counter[str]:
    await apply_topics(settings)
    producer = ResilientSender(settings.kafka)
    consumer = settings.kafka.consumer(
        settings.topic(topics.ORDERS_STATUS),
        settings.topic(topics.FULFILLMENT_STAGE_CHANGES),
        group_id=None,
        auto_offset_reset="earliest",  # this run's orders only (filtered by external id prefix)
    )
    await consumer.start()
    board, stages = StatusBoard(), StageBoard()
    floor = WarehouseFloor(producer, settings.topic_prefix, seed=run_id, step_s=(0.5, 3.0))
    shop = demo_shop()
    plan = Channel(planned=max(1, round(rate * duration)))
    view: DemoView | None = None
    try:
        await publish_shop(producer, settings, shop)
        print(
            f"seeded {len(shop.products)} products, {len(shop.locations)} locations, {len(shop.stock)} stock counts"
        )
        view = DemoView(plan)
        channel = asyncio.create_task(_play_channel(producer, settings, shop, rate, duration, run_id, plan))
        started = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    event = orjson.loads(record.value)
                    if record.topic.endswith(topics.FULFILLMENT_STAGE_CHANGES):
                        if event.get("order_id") in board.latest:
                            stages.apply(event)
                            floor.on_stage_event(event)
                    elif str(event.get("external_id", "")).startswith(run_id):
                        board.apply(event)
            view.show(time.monotonic() - started, board, stages)
            counts = board.counts()
            settled = all(
                s in ("delivered", "rejected", "cancelled", "backordered", "on_hold")
                for s in counts.elements()
            )
            if channel.done() and (settled or time.monotonic() - started > duration + 60):
                break
            if not healthy():
                view.say("a service process exited; see its log")
                break
        await channel
        return board.counts()
    finally:
        if view is not None:
            view.close()
        await consumer.stop()
        await producer.stop()


async def _play_channel(
    producer: ResilientSender,
    settings: BatonSettings,
    shop: Shop,
    rate: float,
    duration: float,
    run_id: str,
    channel: Channel,
) -> int:
    """Submit orders at ``rate`` per second (from the schedule, not from the last send)."""
    rng = random.Random(run_id)
    topic = settings.topic(topics.ORDERS_SUBMITTED)
    started = time.monotonic()
    while time.monotonic() - started < duration:
        due = started + channel.sent / rate
        if (delay := due - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        order = random_order(rng, shop, f"{run_id}-{channel.sent}", pickup_share=0.1)
        await producer.send(topic, orjson.dumps(order), f"{order['channel']}:{order['external_id']}")
        channel.sent += 1
    return channel.sent
