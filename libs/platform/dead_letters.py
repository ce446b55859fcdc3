"""Reading the services' dead-letter topics without a consumer group: `baton dlq` and the
fulfillment board's dead-letter list (notification observes those topics, see the topology)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError

from libs.contracts.topics import SERVICES, dead_letter_topic
from libs.platform.settings import BatonSettings


@dataclass(frozen=True)
class DeadLetter:
    service: str
    offset: int
    at: datetime
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def cause(self) -> str:
        return self.headers.get("dlq-cause", "?")

    @property
    def source(self) -> str:
        h = self.headers
        return f"{h.get('dlq-source-topic', '?')}[{h.get('dlq-source-partition', '?')}]@{h.get('dlq-source-offset', '?')}"


async def read_dead_letters(
    settings: BatonSettings, services: tuple[str, ...] = SERVICES
) -> list[DeadLetter]:
    """Everything currently in the services' dead-letter topics, oldest first."""
    consumer = settings.kafka.consumer(group_id=None, enable_auto_commit=False)
    try:
        await consumer.start()
        partitions = []
        owner: dict[str, str] = {}
        for service in services:
            topic = settings.topic(dead_letter_topic(service))
            owner[topic] = service
            for p in consumer.partitions_for_topic(topic) or await readable_partitions(consumer, topic):
                partitions.append(TopicPartition(topic, p))
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        letters: list[DeadLetter] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for r in records:
                    headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
                    letters.append(
                        DeadLetter(
                            owner[tp.topic],
                            r.offset,
                            dead_lettered_at(headers, r.timestamp),
                            r.key,
                            r.value,
                            headers,
                        )
                    )
        return sorted(letters, key=lambda d: d.at)
    finally:
        await consumer.stop()


def dead_lettered_at(headers: dict[str, str], record_timestamp_ms: int) -> datetime:
    """When the service gave up on the record (``dlq-at``); the record's own timestamp otherwise."""
    try:
        return datetime.fromtimestamp(float(headers["dlq-at"]), UTC)
    except (KeyError, ValueError):
        return datetime.fromtimestamp(record_timestamp_ms / 1000, UTC)


async def readable_partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The topic's partitions; a topic we may not read raises (an assigned consumer would
    otherwise wait for records that never come)."""
    await consumer._client.force_metadata_update()
    if topic in consumer._client.cluster.unauthorized_topics:
        raise TopicAuthorizationFailedError(f"may not read {topic}")
    return consumer.partitions_for_topic(topic) or set()
