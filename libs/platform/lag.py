"""Consumer lag: how far each consumer group's committed offsets trail the end of its topics.

The figure KEDA scales on; Baton computes it the same way for ``/metrics`` and ``baton top``.
A topic or group the principal may not describe raises an authorization error instead of
reading as "no lag": a group-less consumer is otherwise silently shown nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import TopicAuthorizationFailedError, for_code

from libs.platform.kafka import KafkaAccess, close_quietly


@dataclass(frozen=True)
class GroupLag:
    group: str
    topic: str
    partitions: int
    end_offset: int
    committed: int
    members: int

    @property
    def lag(self) -> int:
        return max(0, self.end_offset - self.committed)


class LagProbe:
    """Keeps one admin client and one group-less consumer open between readings."""

    def __init__(self, kafka: KafkaAccess) -> None:
        self._kafka = kafka
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._admin = self._kafka.admin(request_timeout_ms=5000)
        self._consumer = self._kafka.consumer(enable_auto_commit=False)
        try:
            await self._admin.start()
            await self._consumer.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await close_quietly(self._consumer, self._admin)
        self._admin = self._consumer = None

    async def read(self, groups: dict[str, tuple[str, ...]]) -> list[GroupLag]:
        """Lag per (group, topic), summed over partitions; a group that never committed counts from 0."""
        if self._admin is None or self._consumer is None:
            await self.start()
        assert self._admin is not None and self._consumer is not None
        partitions: dict[str, list[TopicPartition]] = {}
        for topics in groups.values():
            for topic in topics:
                if topic not in partitions:
                    ids = self._consumer.partitions_for_topic(topic)
                    if ids is None:
                        await self._consumer._client.force_metadata_update()
                        ids = self._consumer.partitions_for_topic(topic) or set()
                    if topic in self._consumer._client.cluster.unauthorized_topics:
                        raise TopicAuthorizationFailedError(f"may not describe topic {topic}")
                    partitions[topic] = [TopicPartition(topic, p) for p in sorted(ids)]
        every = [tp for tps in partitions.values() for tp in tps]
        ends = await self._consumer.end_offsets(every) if every else {}
        members = await self.members(list(groups))
        rows: list[GroupLag] = []
        for group, topics in groups.items():
            committed = await self._admin.list_consumer_group_offsets(group)
            for topic in topics:
                tps = partitions.get(topic, [])
                rows.append(
                    GroupLag(
                        group=group,
                        topic=topic,
                        partitions=len(tps),
                        end_offset=sum(ends.get(tp, 0) for tp in tps),
                        committed=sum(max(0, committed[tp].offset) if tp in committed else 0 for tp in tps),
                        members=members.get(group, 0),
                    )
                )
        return rows

    async def members(self, groups: list[str]) -> dict[str, int]:
        """Members per consumer group (DescribeGroups v0 rows: error, group, state, protocol type,
        protocol, members)."""
        if self._admin is None:
            await self.start()
        assert self._admin is not None
        found: dict[str, int] = {}
        for group_id in groups:
            # One group per request: aiokafka 0.14 fails to decode a DescribeGroups v2 response
            # that describes several groups at once (buffer underrun, connection dropped).
            for response in await self._admin.describe_consumer_groups([group_id]):
                for group in response.groups:
                    if group[0]:
                        raise for_code(group[0])(f"describing consumer group {group[1]}")
                    found[group[1]] = len(group[5])
        return found

    async def assignment(self, group: str) -> dict[str, list[TopicPartition]]:
        """Which member owns which partitions (member id -> partitions), from the group's own data."""
        if self._admin is None:
            await self.start()
        assert self._admin is not None
        owned: dict[str, list[TopicPartition]] = {}
        for response in await self._admin.describe_consumer_groups([group]):
            for described in response.groups:
                for member in described[5]:
                    raw = member[-1]
                    parts = ConsumerProtocolMemberAssignment.decode(raw).partitions() if raw else []
                    owned[member[0]] = sorted(parts)
        return owned
