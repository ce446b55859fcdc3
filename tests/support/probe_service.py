"""A minimal service on Baton's real runtime, used to prove the delivery guarantees.

It reads `{"body": ...}` records from its own topic and inserts one row per applied record.
``PROBE_CRASH=before_commit``: exit while the database transaction is still open.
``PROBE_CRASH=after_db_commit``: exit after the database commit, before the offset commit.
"""

from __future__ import annotations

import os

import asyncpg
from pydantic import Field

from libs.contracts.envelope import Contract, Event
from libs.contracts.topology import Input, ServiceTopology
from libs.platform.routing import ServiceRouter
from libs.platform.service import Runtime, ServiceDefinition, Stopper, run
from libs.platform.settings import BatonSettings

PROBE_TOPIC = "probe.input.v1"


class ProbeRecord(Contract):
    body: str = Field(max_length=10_000)


PROBE = ServiceTopology("probe", inputs=(Input("probe", PROBE_TOPIC, (ProbeRecord,)),), emits=())


def build_router(_: BatonSettings) -> ServiceRouter[asyncpg.Connection]:
    crash = os.environ.get("PROBE_CRASH", "")
    router: ServiceRouter[asyncpg.Connection] = ServiceRouter(PROBE, lambda conn: conn)

    @router.on(ProbeRecord)
    async def on_probe(record: ProbeRecord, conn: asyncpg.Connection) -> list[Event]:
        await conn.execute("INSERT INTO applied (message_id, body) VALUES ($1, $1)", record.body)
        if crash == "before_commit":
            os._exit(17)
        return []

    return router


async def crash_after_commit(runtime: Runtime) -> Stopper:
    if os.environ.get("PROBE_CRASH", "") == "after_db_commit":
        runtime.after_commit.append(lambda: os._exit(17))

    async def nothing() -> None:
        return None

    return nothing


DEFINITION = ServiceDefinition(
    topology=PROBE,
    migrations="tests.support.probe_migrations",
    settings=BatonSettings,
    router=build_router,
    workers=crash_after_commit,
)

if __name__ == "__main__":
    raise SystemExit(run(DEFINITION))
