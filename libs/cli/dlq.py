"""`baton dlq`: read the dead-letter topics and replay records to where they came from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError

from libs.contracts.topics import SERVICES, dead_letter_topic
from libs.platform.messaging import REPLAYED_FROM_HEADER
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
            for p in consumer.partitions_for_topic(topic) or await _partitions(consumer, topic):
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


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The topic's partitions; a topic we may not read raises (an assigned consumer would
    otherwise wait for records that never come)."""
    await consumer._client.force_metadata_update()
    if topic in consumer._client.cluster.unauthorized_topics:
        raise TopicAuthorizationFailedError(f"may not read {topic}")
    return consumer.partitions_for_topic(topic) or set()


async def replay(settings: BatonSettings, service: str, since: datetime | None, cause: str | None) -> int:
    """Publish dead letters back to their source topic (same key); returns how many were sent.

    The record goes back exactly as it came (key, value and its original headers, which the dead
    letter kept), plus a `dlq-replayed-from` header naming the dead letter: the service applies it
    afresh (once per dead letter, however often it is replayed); if it is still bad it is
    dead-lettered again.
    """
    letters = [
        d
        for d in await read_dead_letters(settings, (service,))
        if "dlq-source-topic" in d.headers
        and (since is None or d.at >= since)
        and (cause is None or d.cause == cause)
    ]
    producer = settings.kafka.producer(enable_idempotence=True, acks="all", max_request_size=4 * 1024 * 1024)
    try:
        await producer.start()
        for d in letters:
            headers = [(k, v.encode()) for k, v in d.headers.items() if not k.startswith("dlq-")]
            origin = f"{settings.topic(dead_letter_topic(service))}@{d.offset}"
            headers.append((REPLAYED_FROM_HEADER, origin.encode()))
            await producer.send_and_wait(d.headers["dlq-source-topic"], d.value, key=d.key, headers=headers)
    finally:
        await producer.stop()
    return len(letters)
