"""Kafka at the edge: the faststream broker every service uses, and idempotent topic creation."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
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
        return [t.name for t in wanted]
    finally:
        await admin.close()
