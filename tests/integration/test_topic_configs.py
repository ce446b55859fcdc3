"""`baton topics apply` on the real broker: a retention shortened in the topic table reaches topics
that exist already, other configs set on them stay, and a second run changes nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from libs.contracts.topics import DEAD_LETTER_RETENTION_HOURS, TOPICS, dead_letter_topic
from tests.support.infra import Infra, fresh_name

pytestmark = pytest.mark.integration

THIRTY_DAYS_MS = str(720 * 3600 * 1000)


def topics_apply(infra: Infra, prefix: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATON_", "KAFKA_"))} | {
        "BATON_KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
        "BATON_TOPIC_PREFIX": prefix,
    }
    done = subprocess.run(
        [sys.executable, "-m", "libs.cli.main", "topics", "apply"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_topics_apply_shortens_the_retention_of_existing_dead_letter_topics_and_keeps_other_configs(
    infra: Infra,
) -> None:
    prefix = fresh_name("cfg") + "."
    dead_letters = prefix + dead_letter_topic("intake")
    admin = infra.kafka.admin()
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    dead_letters,
                    1,
                    1,
                    topic_configs={"retention.ms": THIRTY_DAYS_MS, "segment.ms": "3600000"},
                )
            ]
        )

        first = await asyncio.to_thread(topics_apply, infra, prefix)
        second = await asyncio.to_thread(topics_apply, infra, prefix)

        week_ms = str(DEAD_LETTER_RETENTION_HOURS * 3600 * 1000)
        assert f"altered {dead_letters}: retention.ms={week_ms}" in first.splitlines()
        assert f"created {prefix}{dead_letter_topic('validation')}" in first.splitlines()
        assert second.strip() == "all topics exist as defined"
        [described] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, dead_letters)])
        own = {e[0]: e[1] for e in described.resources[0][4] if e[3] == 1}
        assert own == {"retention.ms": week_ms, "segment.ms": "3600000"}
    finally:
        await admin.delete_topics([prefix + spec.name for spec in TOPICS])
        await admin.close()
