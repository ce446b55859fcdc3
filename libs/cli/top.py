"""`baton top`: a live terminal view of the fleet for people without Grafana.

Per service and consumer group: members, partitions, consumer lag and records consumed per second
(from committed offsets); dead letters per service; committed events waiting in each outbox; durable
timers waiting in each schema (e.g. payment deadlines) and when the next one is due; late
shipments (SLA breaches on `fulfillment.sla-breaches.v1`).
Everything is read from Kafka and PostgreSQL, so it works against any running fleet. On a terminal
it is a live view redrawn in place; piped, or with ``--iterations``, it prints plain screens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from libs.cli import output
from libs.contracts.topics import FULFILLMENT_SLA_BREACHES, SERVICES, TOPICS, dead_letter_topic
from libs.contracts.topology import TOPOLOGY
from libs.platform.lag import GroupLag, LagProbe
from libs.platform.settings import BatonSettings
from libs.platform.timer_worker import pending

SLA_PARTITIONS = next(spec.partitions for spec in TOPICS if spec.name == FULFILLMENT_SLA_BREACHES)


@dataclass(frozen=True)
class Snapshot:
    at: float
    lags: dict[str, list[GroupLag]]
    dead_letters: dict[str, int]
    outbox: dict[str, int | None]
    late_shipments: int = 0
    """Records on `fulfillment.sla-breaches.v1` (retained): shipments that missed a stage deadline."""
    timers: dict[str, tuple[int, float | None]] = dataclasses.field(default_factory=dict)
    """Per service: timers waiting, and seconds until the next is due (negative: late)."""


def fleet_groups(settings: BatonSettings) -> dict[str, dict[str, tuple[str, ...]]]:
    """Each service's consumer groups and the topic each reads, from the topology data."""
    return {
        s.name: {settings.topic(group): (settings.topic(topic),) for group, topic in s.groups.items()}
        for s in TOPOLOGY
    }


async def take_snapshot(
    settings: BatonSettings, probe: LagProbe, groups: dict[str, dict[str, tuple[str, ...]]]
) -> Snapshot:
    lags = {service: await probe.read(service_groups) for service, service_groups in groups.items()}
    consumer = settings.kafka.consumer()
    try:
        await consumer.start()
        dlq_partitions = {s: TopicPartition(settings.topic(dead_letter_topic(s)), 0) for s in SERVICES}
        ends = await consumer.end_offsets(list(dlq_partitions.values()))
        dead = {s: ends.get(tp, 0) for s, tp in dlq_partitions.items()}
        late = await _records_on(consumer, settings.topic(FULFILLMENT_SLA_BREACHES), SLA_PARTITIONS)
    finally:
        await consumer.stop()
    outbox: dict[str, int | None] = {s: None for s in SERVICES}
    timers: dict[str, tuple[int, float | None]] = {}
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(settings.database_url.get_secret_value(), timeout=3)
        try:
            for service in SERVICES:
                with contextlib.suppress(asyncpg.PostgresError):
                    outbox[service] = await conn.fetchval(f'SELECT count(*) FROM "{service}".outbox')
                with contextlib.suppress(asyncpg.PostgresError):
                    async with conn.transaction():
                        await conn.execute(f'SET LOCAL search_path TO "{service}"')
                        timers[service] = await pending(conn)
        finally:
            await conn.close()
    return Snapshot(time.monotonic(), lags, dead, outbox, late, timers)


async def _records_on(consumer: AIOKafkaConsumer, topic: str, partitions: int) -> int:
    """How many records the topic holds now, over its ``partitions`` (as `baton topics apply` made it)."""
    assigned = [TopicPartition(topic, p) for p in range(partitions)]
    ends = await consumer.end_offsets(assigned)
    starts = await consumer.beginning_offsets(assigned)
    return sum(ends[tp] - starts.get(tp, 0) for tp in assigned)


@dataclass(frozen=True)
class GroupRow:
    service: str
    group: str
    members: int
    partitions: int
    lag: int
    rate: float | None
    """Records committed per second since the previous snapshot (None on the first)."""


def group_rows(current: Snapshot, previous: Snapshot | None, prefix: str = "") -> list[GroupRow]:
    """One row per consumer group and topic; group names without the environment's topic prefix."""
    rows: list[GroupRow] = []
    elapsed = current.at - previous.at if previous else 0
    for service, lags in current.lags.items():
        before = {(r.group, r.topic): r for r in previous.lags.get(service, [])} if previous else {}
        for row in lags:
            rate = None
            if elapsed > 0 and (old := before.get((row.group, row.topic))) is not None:
                rate = max(0, row.committed - old.committed) / elapsed
            rows.append(
                GroupRow(service, row.group.removeprefix(prefix), row.members, row.partitions, row.lag, rate)
            )
    return rows


def render(current: Snapshot, previous: Snapshot | None, prefix: str = "") -> str:
    """The plain screen (pipes, ``--iterations``): fixed columns that scripts and tests read."""
    lines = [
        f"{'service':<13}{'consumer group':<44}{'members':>8}{'parts':>6}{'lag':>9}{'rec/s':>9}",
        "-" * 89,
    ]
    for r in group_rows(current, previous, prefix):
        rate = "" if r.rate is None else f"{r.rate:.1f}"
        lines.append(f"{r.service:<13}{r.group[:43]:<44}{r.members:>8}{r.partitions:>6}{r.lag:>9}{rate:>9}")
    lines.append("")
    lines.append(f"{'service':<13}{'dead letters':>13}{'outbox waiting':>16}{'timers':>8}{'next due in':>13}")
    for service in SERVICES:
        waiting = current.outbox.get(service)
        count, next_in = current.timers.get(service, (None, None))
        due = "-" if next_in is None else f"{next_in:.0f}s"
        lines.append(
            f"{service:<13}{current.dead_letters.get(service, 0):>13}"
            f"{'-' if waiting is None else waiting:>16}{'-' if count is None else count:>8}{due:>13}"
        )
    lines.append("")
    lines.append(f"late shipments (SLA breaches): {current.late_shipments}")
    return "\n".join(lines)


def view(current: Snapshot, previous: Snapshot | None, prefix: str = "") -> Group:
    """The live view on a terminal: the same figures as ``render``, as tables."""
    groups = output.table("service", "consumer group", "members>", "partitions>", "lag>", "rec/s>")
    for r in group_rows(current, previous, prefix):
        lag = Text(str(r.lag), style="bold red" if r.lag > 1000 else "")
        output.add_row(
            groups,
            r.service,
            r.group,
            r.members,
            r.partitions,
            lag,
            "" if r.rate is None else f"{r.rate:.1f}",
        )
    services = output.table("service", "dead letters>", "outbox waiting>", "timers>", "next due in>")
    for service in SERVICES:
        waiting = current.outbox.get(service)
        dead = current.dead_letters.get(service, 0)
        count, next_in = current.timers.get(service, (None, None))
        output.add_row(
            services,
            service,
            Text(str(dead), style="yellow" if dead else ""),
            "-" if waiting is None else waiting,
            "-" if count is None else count,
            "-" if next_in is None else f"{next_in:.0f}s",
        )
    title = Text(f"{time.strftime('%H:%M:%S')} baton top (Ctrl-C to quit)", style="bold")
    late = Text(
        f"late shipments (SLA breaches): {current.late_shipments}",
        style="yellow" if current.late_shipments else "",
    )
    return Group(title, groups, services, late)


async def watch(
    settings: BatonSettings, interval: float, iterations: int | None, out: Console | None = None
) -> None:
    """Until Ctrl-C, or ``iterations`` screens: a live view on a terminal, plain screens otherwise."""
    out = out or output.console()
    probe = LagProbe(settings.kafka)
    groups = fleet_groups(settings)
    previous: Snapshot | None = None
    live = Live(console=out, auto_refresh=False) if iterations is None and out.is_terminal else None
    done = 0
    try:
        if live is not None:
            live.start()
        while iterations is None or done < iterations:
            current = await take_snapshot(settings, probe, groups)
            if live is not None:
                live.update(view(current, previous, settings.topic_prefix), refresh=True)
            else:
                screen = render(current, previous, settings.topic_prefix)
                print(time.strftime("%H:%M:%S"), "baton top (Ctrl-C to quit)\n" + screen, flush=True)
            previous = current
            done += 1
            if iterations is None or done < iterations:
                await asyncio.sleep(interval)
    finally:
        if live is not None:
            live.stop()
        await probe.stop()
