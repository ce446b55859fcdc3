"""`baton dlq`: read the dead-letter topics and replay records to where they came from."""

from __future__ import annotations

from datetime import datetime

from libs.contracts.topics import dead_letter_topic
from libs.platform.dead_letters import DeadLetter, dead_lettered_at, read_dead_letters
from libs.platform.messaging import REPLAYED_FROM_HEADER
from libs.platform.settings import BatonSettings


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


__all__ = ["DeadLetter", "dead_lettered_at", "read_dead_letters", "replay"]
