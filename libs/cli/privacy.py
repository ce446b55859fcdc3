"""`baton privacy`: publish an erasure request, and read which services have applied it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition
from pydantic import ValidationError

from libs.contracts.privacy import ErasureApplied, ErasureRequested
from libs.contracts.topics import PRIVACY_ERASURE_REQUESTS, PRIVACY_ERASURES
from libs.contracts.topology import erasers
from libs.platform.dead_letters import readable_partitions
from libs.platform.settings import BatonSettings


async def request_erasure(settings: BatonSettings, request: ErasureRequested) -> None:
    """Publish the request (idempotent producer, acks=all); every service that keeps personal data reads it."""
    producer = settings.kafka.producer(enable_idempotence=True, acks="all")
    try:
        await producer.start()
        await producer.send_and_wait(
            settings.topic(PRIVACY_ERASURE_REQUESTS),
            request.model_dump_json().encode(),
            key=request.request_id.encode(),
        )
    finally:
        await producer.stop()


@dataclass(frozen=True)
class ErasureStatus:
    """Where one request stands: each service's report (in the order they came), and who is still due."""

    request_id: str
    reports: Sequence[ErasureApplied]

    @property
    def waiting_for(self) -> list[str]:
        reported = {r.service for r in self.reports}
        return [s for s in erasers() if s not in reported]

    @property
    def complete(self) -> bool:
        return not self.waiting_for


async def erasure_status(settings: BatonSettings, request_id: str) -> ErasureStatus:
    """Read the outcome topic from its start (it keeps 7 days) for this request's reports."""
    topic = settings.topic(PRIVACY_ERASURES)
    consumer = settings.kafka.consumer(group_id=None, enable_auto_commit=False)
    reports: list[ErasureApplied] = []
    try:
        await consumer.start()
        partitions = [TopicPartition(topic, p) for p in sorted(await readable_partitions(consumer, topic))]
        if not partitions:
            return ErasureStatus(request_id, reports)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    try:
                        report = ErasureApplied.model_validate_json(record.value)
                    except ValidationError:
                        continue
                    if report.request_id == request_id:
                        reports.append(report)
    finally:
        await consumer.stop()
    return ErasureStatus(request_id, reports)
