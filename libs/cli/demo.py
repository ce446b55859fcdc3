"""`baton demo`: seed a shop, play a channel at a chosen rate, and show orders by status as they flow.

Besides plain deliveries a newcomer sees the other paths: click-and-collect orders, returns (the
demo plays the customer asking to return part of some delivered orders, then the warehouse receiving
the parcel), and late shipments (the fleet the demo starts runs a pipelines file in which one stage
is late after seconds; the demo counts `fulfillment.sla-breaches.v1`).

On a terminal the view is redrawn in place (orders submitted against the plan, orders by status,
shipments by pipeline stage, late shipments and returns); piped, it prints three plain lines a second."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import yaml
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

LATE_PIPELINE, LATE_STAGE, LATE_AFTER_S = "standard", "picking", 2.5
"""The stage the demo's own fleet makes late after seconds: the warehouse floor takes 0.5-3 s a step,
so some shipments of the standard pipeline stay in it longer."""

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
    "partially_returned",
    "returned",
    "refunded",
    "cancelled",
]
RETURNED = frozenset({"partially_returned", "returned"})
SETTLED = RETURNED | {"delivered", "rejected", "cancelled", "backordered", "on_hold", "refunded"}
"""Where an order may rest when the channel has stopped (backordered and on hold wait for people)."""


def demo_pipelines(
    packaged: Mapping[str, Any],
    pipeline: str = LATE_PIPELINE,
    stage: str = LATE_STAGE,
    late_after_s: float = LATE_AFTER_S,
) -> dict[str, Any]:
    """The packaged pipelines document with ``stage`` of ``pipeline`` given a deadline of seconds
    (`sla_hours`, the same key fulfillment and notification's board read); everything else as is."""
    changed = False
    pipelines = []
    for p in packaged["pipelines"]:
        stages = []
        for s in p["stages"]:
            if p["name"] == pipeline and s["name"] == stage:
                s, changed = s | {"sla_hours": late_after_s / 3600}, True
            stages.append(s)
        pipelines.append(p | {"stages": stages})
    if not changed:
        raise ValueError(f"no stage {stage!r} in a pipeline {pipeline!r}")
    return dict(packaged) | {"pipelines": pipelines}


def demo_pipelines_file(folder: Path) -> Path:
    """Write the demo's pipelines (from the packaged file, read as data) for `BATON_PIPELINES_FILE`."""
    text = resources.files("services.fulfillment").joinpath("pipelines.yaml").read_text()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo-pipelines.yaml"
    path.write_text(yaml.safe_dump(demo_pipelines(yaml.safe_load(text)), sort_keys=False))
    return path


Message = tuple[str, str, dict[str, Any]]
"""What to publish: (topic name without prefix, key, payload)."""


@dataclass
class Returns:
    """The demo's customers and warehouse for returns: a seeded share of the run's delivered orders
    asks to return one unit of one line; once authorized, the parcel arrives where it shipped from,
    resellable or (sometimes) damaged. Pure: it says what to publish."""

    seed: str
    share: float = 1 / 8
    damaged_share: float = 0.25
    pending: dict[str, str] = field(default_factory=dict)
    """return id -> order id, until the order shows the return (or it was refused)"""
    where: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)
    """return id -> (location, lines), for the receipt"""
    received: int = 0
    refused: int = 0

    def _draw(self, what: str) -> float:
        return random.Random(f"{self.seed}:{what}").random()

    def on_delivered(self, event: Mapping[str, Any]) -> Message | None:
        """The return request for a delivered order, if this order is one of the returned share."""
        return_id = f"{event['external_id']}-rma"
        shipments = [s for s in event.get("shipments") or [] if s.get("lines")]
        if return_id in self.where or not shipments or self._draw(return_id) >= self.share:
            return None
        shipment = shipments[0]
        lines = [{"sku": shipment["lines"][0]["sku"], "quantity": 1}]
        self.where[return_id] = (shipment["location_id"], lines)
        self.pending[return_id] = str(event["order_id"])
        request = {
            "return_id": return_id,
            "order_id": str(event["order_id"]),
            "lines": lines,
            "reason": "demo",
        }
        return topics.RETURNS_REQUESTED, str(event["order_id"]), request

    def on_status(self, event: Mapping[str, Any]) -> Message | None:
        """The warehouse's receipt once a return of this run is authorized."""
        return_id = str(event.get("return_id"))
        if return_id not in self.where:
            return None
        if event.get("status") == "refused":
            self.refused += 1
            self.pending.pop(return_id, None)
        elif event.get("status") == "received":
            self.received += 1
        elif event.get("status") == "authorized":
            location, lines = self.where[return_id]
            condition = (
                "damaged" if self._draw(f"{return_id}:condition") < self.damaged_share else "resellable"
            )
            receipt = {
                "return_id": return_id,
                "location_id": location,
                "lines": [line | {"condition": condition} for line in lines],
            }
            return topics.RETURNS_RECEIVED, return_id, receipt
        return None

    def settle(self, board: StatusBoard) -> int:
        """Forget returns the orders show; how many are still under way."""
        ids = {order_id for order_id, (_, status) in board.latest.items() if status in RETURNED}
        for return_id in [r for r, order_id in self.pending.items() if order_id in ids]:
            del self.pending[return_id]
        return len(self.pending)

    def line(self) -> str:
        return f"returns requested {len(self.where)}, received {self.received}, refused {self.refused}"


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
        """order id -> (version, status)"""

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

    def show(
        self, elapsed: float, board: StatusBoard, stages: StageBoard, late: int, returns: Returns
    ) -> None:
        counts = board.counts()
        if self._live is None:
            line = "  ".join(f"{s} {counts[s]}" for s in STATUS_ORDER if counts[s])
            print(f"[{elapsed:5.0f}s] orders {len(board.latest):5d} | {line}", flush=True)
            print(f"         in pipelines | {stages.line()}", flush=True)
            print(f"         late shipments {late} | {returns.line()}", flush=True)
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
        more = Text(f"late shipments {late}  |  {returns.line()}")
        self._live.update(Group(title, self._submitted, statuses, shipments, more), refresh=True)

    def say(self, message: str) -> None:
        (self._live.console if self._live else self._out).print(message)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


@dataclass(frozen=True)
class DemoOptions:
    """What a run plays besides plain orders; the defaults are `baton demo`'s (tests force shares up)."""

    return_share: float = 1 / 8
    pickup_share: float = 0.1
    late_channel: str | None = None
    """Submit ``late_share`` of the orders on this channel (e.g. one whose pipeline is late after seconds)."""
    late_share: float = 0.0
    stages: Mapping[str, Sequence[str]] | None = None
    """Stage names per pipeline for the warehouse floor (default: the packaged pipelines')."""
    step_s: tuple[float, float] = (0.5, 3.0)
    """How long the warehouse floor takes per stage, in seconds (drawn between the two)."""
    shop: Shop | None = None


@dataclass(frozen=True)
class DemoOutcome:
    statuses: Counter[str]
    """The run's orders by their last status"""
    late: int
    """Shipments of the run that were late"""
    returns: Returns


async def run_demo(
    settings: BatonSettings,
    rate: float,
    duration: float,
    run_id: str,
    healthy: Callable[[], bool] = lambda: True,
    options: DemoOptions = DemoOptions(),
) -> DemoOutcome:
    """Play the channel for ``duration`` seconds, then wait (up to a minute) until every order has
    settled and every return the demo started shows on its order."""
    await apply_topics(settings)
    producer = ResilientSender(settings.kafka)
    consumer = settings.kafka.consumer(
        settings.topic(topics.ORDERS_STATUS),
        settings.topic(topics.FULFILLMENT_STAGE_CHANGES),
        settings.topic(topics.FULFILLMENT_SLA_BREACHES),
        settings.topic(topics.RETURNS_STATUS),
        group_id=None,
        auto_offset_reset="earliest",  # this run's orders only (filtered by external id prefix)
    )
    await consumer.start()
    board, stages, returns = StatusBoard(), StageBoard(), Returns(run_id, options.return_share)
    late: set[str] = set()
    floor = WarehouseFloor(
        producer, settings.topic_prefix, seed=run_id, step_s=options.step_s, stages=options.stages
    )
    shop = options.shop or demo_shop()
    plan = Channel(planned=max(1, round(rate * duration)))
    view: DemoView | None = None

    async def publish(message: Message | None) -> None:
        if message is not None:
            topic, key, payload = message
            await producer.send(settings.topic(topic), orjson.dumps(payload), key)

    try:
        await publish_shop(producer, settings, shop)
        print(
            f"seeded {len(shop.products)} products, {len(shop.locations)} locations, {len(shop.stock)} stock counts"
        )
        view = DemoView(plan)
        channel = asyncio.create_task(
            _play_channel(producer, settings, shop, rate, duration, run_id, plan, options)
        )
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
                    elif record.topic.endswith(topics.FULFILLMENT_SLA_BREACHES):
                        if event.get("order_id") in board.latest:
                            late.add(str(event.get("shipment_id")))
                    elif record.topic.endswith(topics.RETURNS_STATUS):
                        await publish(returns.on_status(event))
                    elif str(event.get("external_id", "")).startswith(run_id):
                        board.apply(event)
                        if event.get("status") == "delivered":
                            await publish(returns.on_delivered(event))
            view.show(time.monotonic() - started, board, stages, len(late), returns)
            pending = returns.settle(board)
            settled = not pending and all(s in SETTLED for s in board.counts().elements())
            if channel.done() and (settled or time.monotonic() - started > duration + 60):
                break
            if not healthy():
                view.say("a service process exited; see its log")
                break
        await channel
        return DemoOutcome(board.counts(), len(late), returns)
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
    options: DemoOptions,
) -> int:
    """Submit orders at ``rate`` per second (from the schedule, not from the last send)."""
    rng = random.Random(run_id)
    topic = settings.topic(topics.ORDERS_SUBMITTED)
    started = time.monotonic()
    while time.monotonic() - started < duration:
        due = started + channel.sent / rate
        if (delay := due - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        name, pickup_share = "webshop", options.pickup_share
        if options.late_channel and rng.random() < options.late_share:  # no draw otherwise: seeds replay
            name, pickup_share = options.late_channel, 0.0  # such a channel need not offer pickup
        external_id = f"{run_id}-{channel.sent}"
        order = random_order(rng, shop, external_id, channel=name, pickup_share=pickup_share)
        await producer.send(topic, orjson.dumps(order), f"{order['channel']}:{order['external_id']}")
        channel.sent += 1
    return channel.sent
