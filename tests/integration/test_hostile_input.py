"""Hostile records on every input of every service, through the real processor on PostgreSQL: each
bad one becomes a dead letter with its cause, and the good records of the same poll are applied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import import_module
from typing import Any

import asyncpg
import orjson
import pytest

from libs.contracts.topics import SERVICES, dead_letter_topic
from libs.platform.db import create_pool, ensure_database, migrate
from libs.platform.processing import InputProcessor
from libs.platform.records import Incoming
from libs.platform.routing import BoundInput, _type_name
from tests.support.infra import Infra, fresh_name
from tests.support.samples import replaced, sample_json, text_paths

pytestmark = pytest.mark.integration


@pytest.fixture(params=SERVICES)
async def service(request: pytest.FixtureRequest, infra: Infra) -> AsyncIterator[tuple[Any, asyncpg.Pool]]:
    """A service's real definition and a pool on a fresh database migrated for it."""
    name: str = request.param
    definition = import_module(f"services.{name}.main").DEFINITION
    dsn = infra.database_url(fresh_name(name))
    await ensure_database(dsn)
    await migrate(dsn, name, definition.migrations)
    pool = await create_pool(dsn, name, 4)
    try:
        yield definition, pool
    finally:
        await pool.close()


def _records(bound: BoundInput[Any]) -> tuple[list[Incoming], dict[int, set[str]]]:
    """A poll of good and hostile records, and the causes each hostile one (by offset) may get."""
    topic = bound.spec.topic
    good: list[Incoming] = []
    hostile: list[tuple[Incoming, set[str]]] = []
    offset = iter(range(1000))
    for contract in bound.spec.carries:
        sample = sample_json(contract)
        headers = {"event_type": _type_name(contract)}
        good.append(Incoming(topic, 0, next(offset), "key-a", orjson.dumps(sample), headers))
        first_text = text_paths(sample)[0]
        with_nul = replaced(sample, first_text, "bad\x00text")
        hostile.append(
            (Incoming(topic, 0, next(offset), "key-a", orjson.dumps(with_nul), headers), {"schema_violation"})
        )
        with_crlf = replaced(sample, text_paths(sample)[-1], "two\r\nlines\u2028three")
        hostile.append(
            (
                Incoming(topic, 1, next(offset), "key-b", orjson.dumps(with_crlf), headers),
                {"schema_violation"},
            )
        )
    hostile += [
        (Incoming(topic, 0, next(offset), "key-a", b"{oops", {}), {"invalid_json"}),
        (
            Incoming(
                topic, 2, next(offset), "nul\x00key", b"\x00\xff", {"event_type": "x\x00", "n\x00": "\x00"}
            ),
            {"invalid_json", "unknown_event_type", "schema_violation"},
        ),
        (
            Incoming(topic, 0, next(offset), "key-a", b"{}", {"event_type": "order.nonsense"}),
            {"unknown_event_type", "schema_violation"},
        ),
    ]
    # Good records before, between and after the hostile ones, on the same keys.
    records: list[Incoming] = []
    for i, (record, _) in enumerate(hostile):
        if i < len(good):
            records.append(good[i])
        records.append(record)
    records += good[len(hostile) :]
    return records, {r.offset: causes for r, causes in hostile}


async def test_every_hostile_record_is_dead_lettered_with_its_cause_and_the_good_ones_are_applied(
    service: tuple[Any, asyncpg.Pool],
) -> None:
    definition, pool = service
    for bound in definition.router(definition.settings()).bind():
        records, expected = _records(bound)
        processor = InputProcessor(
            service=definition.name,
            bound=bound,
            pool=lambda: pool,
            dead_letter_topic=dead_letter_topic(definition.name),
            on_commit=lambda: None,
        )
        await pool.execute("DELETE FROM outbox")

        await processor.process(records)  # never raises for a hostile record

        # A record naming a type a multi-type input does not carry is skipped, by design: written by a
        # producer newer than this service.
        skipped = {r.offset for r in records if not bound.wants(r)}
        ids = {bound.parse(r).message_id: r for r in records if r.offset not in skipped}
        claimed = {r["message_id"] for r in await pool.fetch("SELECT message_id FROM inbox")}
        assert set(ids) <= claimed, f"{bound.name}: records not applied: {set(ids) - claimed}"
        letters = {
            int(r["offset"]): r["cause"]
            for r in await pool.fetch(
                "SELECT headers->>'dlq-source-offset' AS offset, headers->>'dlq-cause' AS cause FROM outbox"
                " WHERE topic = $1 AND headers->>'dlq-source-topic' = $2",
                dead_letter_topic(definition.name),
                bound.spec.topic,
            )
        }
        assert not skipped & letters.keys()
        for offset, causes in expected.items():
            if offset in skipped:
                continue
            assert letters.get(offset) in causes, (bound.name, offset, letters.get(offset), causes)
        good = [r.offset for r in records if r.offset not in expected]
        parse_causes = {"invalid_json", "schema_violation", "unknown_event_type"}
        assert not [o for o in good if letters.get(o) in parse_causes], (
            f"{bound.name}: a good record was refused"
        )
