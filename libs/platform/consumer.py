"""The consumer loop of one service input: fetch, apply durably, then commit the offsets.

Baton runs its own loop on aiokafka rather than faststream's batch subscriber (README, *Stack*):
- it long-polls (``getmany`` returns as soon as records arrive and waits up to a second when
  there are none), where faststream's subscriber sleeps its batch timeout after an empty fetch —
  latency at every hop when the timeout is long, idle polling when it is short;
- it hands the raw records of a poll to the input's processor, with no per-record message object;
- it commits each partition's offset only after the transaction that applied the records has
  committed, and rewinds to the first unapplied record when applying keeps failing;
- it commits offsets in the background, at most every ``COMMIT_INTERVAL_S``, rather than waiting
  for a broker round trip after every poll: the next poll is applied meanwhile. A crash or a lost
  commit only means some applied records are delivered again, and the inbox drops them; when the
  group rebalances, the offsets of the partitions leaving are committed before they go;
- it waits for a broker that goes away while the process starts (a restart of the broker just
  after the service's start-up checks passed), rather than letting the process exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from libs.platform.kafka import KafkaAccess
from libs.platform.messaging import Incoming, headers_dict
from libs.platform.startup import when_reachable

log = logging.getLogger("baton.consumer")

POLL_TIMEOUT_MS = 1000
RETRY_PAUSE_S = 1.0
COMMIT_INTERVAL_S = 0.2


class AppliesRecords(Protocol):
    """What the loop feeds a poll to (an input's ``InputProcessor``)."""

    async def process(self, records: Sequence[Incoming]) -> None: ...


def to_incoming(record: ConsumerRecord[Any, Any]) -> Incoming:
    key = record.key
    return Incoming(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
        value=record.value or b"",
        headers=headers_dict(record.headers),  # foreign header bytes are decoded with replacement
    )


class _CommitBeforeRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partitions leaving this member take their applied offsets with them (fewer redeliveries)."""

    def __init__(self, owner: InputConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner.commit_now()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class InputConsumer:
    """Reads one topic in one consumer group and feeds a poll's records to the input's processor."""

    def __init__(
        self,
        *,
        kafka: KafkaAccess,
        topic: str,
        group: str,
        processor: AppliesRecords,
        client_id: str,
        max_records: int = 500,
    ) -> None:
        self.topic = topic
        self.group = group
        self._processor = processor
        self._max_records = max_records
        self._kafka = kafka
        self._client_id = client_id
        self._consumer = self._new_client()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._applied: dict[TopicPartition, OffsetAndMetadata] = {}
        """Offsets applied but not committed yet."""
        self._committing: asyncio.Task[None] | None = None
        self._committed_at = 0.0
        self.last_poll_at = 0.0
        """When a fetch last answered (readiness: a consumer that cannot reach its broker is stale)."""

    def _new_client(self) -> AIOKafkaConsumer:
        return self._kafka.consumer(
            group_id=self.group,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._max_records,
            fetch_max_wait_ms=500,
            max_poll_interval_ms=300_000,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )

    async def start(self) -> None:
        """Join the group, waiting for a broker that cannot be reached yet.

        The service's start-up checks have reached the broker just before; if it went away since,
        this is a restart, and the process waits for it as it waits in those checks. A client whose
        start failed is closed and a fresh one tried (aiokafka does not restart a client)."""

        async def join() -> None:
            self._consumer.subscribe([self.topic], listener=_CommitBeforeRevoke(self))
            try:
                await self._consumer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._consumer.stop()
                self._consumer = self._new_client()
                raise

        await when_reachable(join, f"consumer {self.group} joining its group")
        self._task = asyncio.create_task(self._run(), name=f"consume-{self.group}")

    async def stop(self) -> None:
        """Finish the poll in hand (apply and commit it), then leave the group."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.commit_now()
        with contextlib.suppress(Exception):
            await self._consumer.stop()

    def healthy(self, within_s: float) -> bool:
        return (
            self._task is not None
            and not self._task.done()
            and time.monotonic() - self.last_poll_at < within_s
        )

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                polled = await self._consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=self._max_records
                )
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                log.warning("fetch failed; retrying", extra={"group": self.group, "error": repr(exc)})
                await self._pause()
                continue
            self.last_poll_at = time.monotonic()
            if polled:
                await self._apply(polled)
            if self._applied and self.last_poll_at - self._committed_at >= COMMIT_INTERVAL_S:
                self._commit_in_background()

    async def _apply(self, polled: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        records = [to_incoming(r) for batch in polled.values() for r in batch]
        try:
            await self._processor.process(records)
        except Exception as exc:  # transient failures outlasted the processor's retries
            log.error(
                "could not apply a poll; it is fetched again",
                extra={"group": self.group, "records": len(records), "error": repr(exc)},
            )
            for tp, batch in polled.items():
                self._consumer.seek(tp, batch[0].offset)
            await self._pause()
            return
        for tp, batch in polled.items():
            self._applied[tp] = OffsetAndMetadata(batch[-1].offset + 1, "")

    def _commit_in_background(self) -> None:
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit())

    async def commit_now(self) -> None:
        """Commit every applied offset, waiting for the broker (stop, rebalance)."""
        if self._committing is not None:
            with contextlib.suppress(Exception):
                await self._committing
        await self._commit()

    async def _commit(self) -> None:
        offsets, self._applied = self._applied, {}
        self._committed_at = time.monotonic()
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved to another member (or the broker is away): it fetches them from
            # the last committed offset, and the inbox drops what was applied here already.
            log.warning("offset commit failed", extra={"group": self.group, "error": repr(exc)})

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), RETRY_PAUSE_S)
