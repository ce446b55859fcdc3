"""The inbox and outbox statements, the errors worth retrying, and business-key locks.

``claim`` records message ids in the ``inbox`` (a redelivered record changes nothing),
``write_outbox`` writes a transaction's events in one statement. The records themselves
(``Incoming``, ``Outgoing``, ``Rejected``, dead letters) live in ``libs/platform/records.py`` and
are re-exported here. ``libs/platform/processing.py`` puts them together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TypeVar

import asyncpg
import orjson
from aiokafka.errors import KafkaError

from libs.platform.records import (
    MAX_DEAD_LETTER_BYTES,
    REPLAYED_FROM_HEADER,
    Incoming,
    Outgoing,
    Rejected,
    dead_letter,
    dead_letter_of,
    headers_dict,
)

log = logging.getLogger("baton.messaging")

T = TypeVar("T")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.TooManyConnectionsError,
    OSError,
    TimeoutError,
    KafkaError,
)


async def claim(conn: asyncpg.Connection, message_ids: Sequence[str]) -> set[str]:
    """Record ids in the inbox; returns those not seen before (the ones to apply)."""
    rows = await conn.fetch(
        "INSERT INTO inbox (message_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING message_id",
        list(message_ids),
    )
    return {r["message_id"] for r in rows}


async def write_outbox(conn: asyncpg.Connection, records: Iterable[Outgoing]) -> int:
    """One statement for all of a transaction's events, ids assigned in the order given (the relay
    sends by id, so one order's events keep their order)."""
    rows = list(records)
    if not rows:
        return 0
    await conn.execute(
        "INSERT INTO outbox (topic, key, value, headers)"
        " SELECT t, k, v, h::json FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[])"
        " WITH ORDINALITY AS o(t, k, v, h, n) ORDER BY n",
        [r.topic for r in rows],
        [r.key for r in rows],
        [r.value for r in rows],
        [orjson.dumps(r.headers).decode() for r in rows],
    )
    return len(rows)


KEY_LOCK_CLASS = 7_001
"""First key of Baton's two-key advisory locks on business keys (a space apart from the relay's)."""


async def take_key_locks(conn: asyncpg.Connection, keys: Sequence[str]) -> None:
    """Transaction-scoped locks on business keys (skus, ...), always taken in key order.

    Re-entrant: a handler may ask again for a key its transaction already holds."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($2, hashtext(k))"
        " FROM (SELECT DISTINCT k FROM unnest($1::text[]) AS k ORDER BY k) AS ordered",
        list(keys),
        KEY_LOCK_CLASS,
    )


__all__ = [
    "KEY_LOCK_CLASS",
    "MAX_DEAD_LETTER_BYTES",
    "REPLAYED_FROM_HEADER",
    "TRANSIENT_ERRORS",
    "Incoming",
    "Outgoing",
    "Rejected",
    "claim",
    "dead_letter",
    "dead_letter_of",
    "headers_dict",
    "take_key_locks",
    "write_outbox",
]
