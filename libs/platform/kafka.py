"""Kafka at the edge: the faststream broker every service uses, and idempotent topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    NotCoordinatorForGroupError,
    TopicAlreadyExistsError,
)
from faststream.kafka import KafkaBroker

from libs.contracts.topics import TOPICS
from libs.platform.settings import BatonSettings

log = logging.getLogger("baton.kafka")


def make_broker(settings: BatonSettings, client_id: str, middlewares: Sequence[Any] = ()) -> KafkaBroker:
    """Producer side is idempotent with acks=all; consumers are configured per subscriber
    (manual commit after the database transaction, never faststream's ACK_FIRST default)."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        graceful_timeout=settings.graceful_timeout_s,
        logger=logging.getLogger("faststream"),
        middlewares=tuple(middlewares),
    )


async def apply_topics(settings: BatonSettings) -> list[str]:
    """Create every Baton topic that is missing (with its partition count); returns those created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(spec.name),
                num_partitions=spec.partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs={"retention.ms": str(spec.retention_hours * 3600 * 1000)},
            )
            for spec in TOPICS
            if settings.topic(spec.name) not in existing
        ]
        if not wanted:
            return []
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(wanted)
        await wait_for_leaders(admin, [t.name for t in wanted])
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def wait_for_leaders(admin: AIOKafkaAdminClient, names: Sequence[str], timeout_s: float = 30.0) -> None:
    """Return once every partition of the new topics has a leader.

    Until then producers and consumers get `NotLeaderForPartition` errors (logged by the clients as
    errors) on a fresh start; waiting here keeps a clean start free of them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = await admin.describe_topics(list(names))
        if all(
            t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        await asyncio.sleep(0.1)
    log.warning("new topics still have partitions without a leader", extra={"topics": list(names)})


async def wait_for_group_coordinators(
    settings: BatonSettings, groups: Sequence[str], timeout_s: float = 60.0
) -> None:
    """Return once the broker names a coordinator for each of ``groups``.

    On a broker's first start the group coordinator (the `__consumer_offsets` topic) is created
    on the first request for it; consumers that join before it has leaders log a stream of
    `GroupCoordinatorNotAvailable` errors. Waiting here keeps a clean start free of them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        waiting = list(groups)
        while waiting:
            try:
                await admin.find_coordinator(waiting[0])
                waiting.pop(0)
            except (
                GroupCoordinatorNotAvailableError,
                NotCoordinatorForGroupError,
                CoordinatorLoadInProgressError,
            ):
                if time.monotonic() > deadline:
                    log.warning("no group coordinator yet; consumers will retry", extra={"group": waiting[0]})
                    return
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
