"""The key topic is a store: compacted when created, and made compacted by `baton topics apply` when an
earlier release created it with a retention time (which would have forgotten keys after a week)."""

from __future__ import annotations

import pytest
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from libs.contracts.topics import NOTIFICATION_API_KEYS, ORDERS_SUBMITTED
from libs.platform.kafka import apply_topics, wait_for_leaders
from libs.platform.settings import BatonSettings
from tests.support.infra import Infra, delete_topics, fresh_name

pytestmark = pytest.mark.integration


async def cleanup_policy(infra: Infra, topic: str) -> str:
    admin = infra.kafka.admin()
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})]
        )
        [resource] = response.resources
        entries = {entry[0]: entry[1] for entry in resource[4]}
        assert "cleanup.policy" in entries, resource
        return str(entries["cleanup.policy"])
    finally:
        await admin.close()


async def test_topics_apply_creates_the_key_topic_compacted_and_compacts_one_an_earlier_release_made(
    infra: Infra,
) -> None:
    fresh, earlier = f"{fresh_name('keys')}.", f"{fresh_name('keys')}."
    try:
        settings = BatonSettings(
            kafka_bootstrap_servers=infra.bootstrap_servers, kafka_security=infra.security, topic_prefix=fresh
        )
        await apply_topics(settings)
        assert await cleanup_policy(infra, fresh + NOTIFICATION_API_KEYS) == "compact"
        assert await cleanup_policy(infra, fresh + ORDERS_SUBMITTED) == "delete"

        admin = infra.kafka.admin()
        await admin.start()
        try:  # as the release before this one created it: kept 7 days
            await admin.create_topics(
                [NewTopic(earlier + NOTIFICATION_API_KEYS, 1, 1, topic_configs={"retention.ms": "604800000"})]
            )
            await wait_for_leaders(admin, [earlier + NOTIFICATION_API_KEYS])
        finally:
            await admin.close()
        assert await cleanup_policy(infra, earlier + NOTIFICATION_API_KEYS) == "delete"
        await apply_topics(settings.model_copy(update={"topic_prefix": earlier}))
        assert await cleanup_policy(infra, earlier + NOTIFICATION_API_KEYS) == "compact"
    finally:
        await delete_topics(infra, fresh)
        await delete_topics(infra, earlier)
