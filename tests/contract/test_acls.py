"""The ACL table stays true to the code: each service's principal may read exactly the topics the
service subscribes to (in its own groups) and write exactly the topics its use cases are given to
emit to, plus its dead letters. A new subscription or output without its grant fails here, not
in production with an authorization error."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from libs.contracts import topics
from libs.contracts.acls import (
    CHANNEL_WRITES,
    PRINCIPALS,
    PUBLIC_TOPICS,
    SERVICE_TOPICS,
    Grant,
    grants,
    render_markdown,
    service_inputs,
    service_writes,
)
from libs.contracts.topics import SERVICES, dead_letter_topic
from libs.platform.kafka import KafkaSecurity
from libs.platform.service import Runtime, ServiceDefinition, consumer_groups
from libs.platform.settings import BatonSettings

pytestmark = pytest.mark.contract

PREFIX = "acl-check."
README = Path(__file__).resolve().parents[2] / "README.md"


def _settings() -> BatonSettings:
    return BatonSettings(
        kafka_bootstrap_servers="unused:9092", kafka_security=KafkaSecurity(), topic_prefix=PREFIX
    )


def _definition(service: str) -> ServiceDefinition:
    definition: ServiceDefinition = importlib.import_module(f"services.{service}.main").DEFINITION
    return definition


def emitted_topics(definition: ServiceDefinition, settings: BatonSettings) -> set[str]:
    """Every topic name the service's handlers hold (what ``runtime.topic()`` gave them to emit to),
    found by walking their closures and the dataclasses in them."""
    found: set[str] = set()
    seen: set[int] = set()

    def walk(value: Any, depth: int = 0) -> None:
        if depth > 6 or id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, str):
            if value.startswith(PREFIX):
                found.add(value.removeprefix(PREFIX))
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item, depth + 1)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), depth + 1)
        elif callable(value):
            for cell in getattr(value, "__closure__", None) or ():
                walk(cell.cell_contents, depth + 1)

    runtime = Runtime(service=definition.name, settings=settings)
    for subscription in definition.subscriptions(runtime):
        handlers: list[Callable[..., Any] | None] = [subscription.handler, subscription.batch_handler]
        for handler in handlers:
            walk(handler)
    return found


def allowed(principal: str, operation: str, resource: str = "topic") -> set[str]:
    """Names (prefix removed) the table grants ``principal``; prefixed grants end in ``*``."""
    return {
        g.name.removeprefix(PREFIX) + ("*" if g.pattern == "prefixed" else "")
        for g in grants(PREFIX)
        if g.principal == principal and g.operation == operation and g.resource == resource
    }


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_may_read_exactly_the_topics_it_subscribes_to_in_its_own_groups(service: str) -> None:
    settings = _settings()
    groups = consumer_groups(_definition(service), settings)
    subscribed = {t.removeprefix(PREFIX) for group_topics in groups.values() for t in group_topics}

    assert subscribed == set(SERVICE_TOPICS[service].reads)
    assert allowed(service, "read") == subscribed
    [group_grant] = allowed(service, "read", "group")
    assert all(g.startswith(PREFIX + group_grant.rstrip("*")) for g in groups)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_may_write_exactly_the_topics_its_use_cases_emit_to_and_its_dead_letters(
    service: str,
) -> None:
    emitted = emitted_topics(_definition(service), _settings())

    assert emitted == set(SERVICE_TOPICS[service].writes)
    assert allowed(service, "write") == emitted | {dead_letter_topic(service)}
    assert allowed(service, "describe") == set()


def test_the_walk_finds_the_outputs_it_is_meant_to_find() -> None:
    """Guards the check above against passing vacuously."""
    assert emitted_topics(_definition("intake"), _settings()) >= {topics.ORDERS_STATUS, topics.ORDERS_REFUSED}


def test_the_channel_may_only_submit_orders_and_cancel_requests() -> None:
    assert allowed("channel", "write") == set(CHANNEL_WRITES)
    assert {g.principal for g in grants()} == set(PRINCIPALS)
    assert [g for g in grants(PREFIX) if g.principal == "channel" and g.operation != "write"] == []


def test_the_reader_reads_only_public_topics_in_its_own_groups() -> None:
    assert allowed("reader", "read") == set(PUBLIC_TOPICS)
    assert not {topics.facts_topic(s) for s in topics.SERVICES} & set(PUBLIC_TOPICS)
    assert allowed("reader", "read", "group") == {"reader.*"}
    assert allowed("reader", "write") == set()


def test_the_operator_has_what_dlq_webhooks_and_top_need_and_no_consumer_group() -> None:
    assert allowed("operator", "read") == {dead_letter_topic(s) for s in SERVICES}
    assert allowed("operator", "write") == set(service_inputs())
    assert {topics.NOTIFICATION_SUBSCRIPTIONS, topics.NOTIFICATION_REDELIVERIES} <= allowed(
        "operator", "write"
    )
    assert allowed("operator", "describe", "group") == {"baton.*"}
    assert allowed("operator", "read", "group") == set()


def test_every_name_in_the_table_carries_the_topic_prefix() -> None:
    assert all(g.name.startswith(PREFIX) for g in grants(PREFIX))
    assert grants("") == sorted(
        Grant(g.principal, g.resource, g.pattern, g.name.removeprefix(PREFIX), g.operation)
        for g in grants(PREFIX)
    )


def test_a_service_writes_its_own_dead_letters_and_nobody_elses() -> None:
    for service in SERVICES:
        writes = set(service_writes(service))
        assert dead_letter_topic(service) in writes
        assert not {dead_letter_topic(other) for other in SERVICES if other != service} & writes


def test_the_readme_shows_the_acl_table_as_the_code_has_it() -> None:
    assert render_markdown() in README.read_text(), "README's ACL table is stale: paste `baton acls list`"
