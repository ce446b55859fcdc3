"""A minimal service on Baton's real runtime, used to prove the delivery guarantees.

``PROBE_CRASH=before_commit``: exit while the database transaction is still open.
``PROBE_CRASH=after_db_commit``: exit after the database commit, before the offset commit.
"""

from __future__ import annotations

import os

import asyncpg

from libs.platform.messaging import Incoming, Outgoing
from libs.platform.service import Runtime, ServiceDefinition, Subscription, build_service_app, run_app
from libs.platform.settings import BatonSettings

PROBE_TOPIC = "probe.input.v1"


def subscriptions(runtime: Runtime) -> list[Subscription]:
    crash = os.environ.get("PROBE_CRASH", "")

    async def on_probe(conn: asyncpg.Connection, record: Incoming) -> list[Outgoing]:
        await conn.execute(
            "INSERT INTO applied (message_id, body) VALUES ($1, $2)", record.message_id, record.value.decode()
        )
        if crash == "before_commit":
            os._exit(17)
        return []

    if crash == "after_db_commit":
        runtime.after_commit.append(lambda: os._exit(17))
    return [Subscription("probe", (PROBE_TOPIC,), on_probe)]


DEFINITION = ServiceDefinition("probe", "tests.support.probe_migrations", subscriptions)

if __name__ == "__main__":
    raise SystemExit(run_app(build_service_app(DEFINITION, BatonSettings())))
