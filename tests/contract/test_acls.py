"""The ACL table stays true to the code: each service's principal may read exactly the topics its
router subscribes to (in its own groups) and write exactly the topics its declared events go to,
plus its dead letters. A new subscription or output without its grant fails here, not
in production with an authorization error."""

from __future__ import annotations

import importlib
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
from libs.contracts.topology import TOPOLOGY, topics_for
from libs.platform.kafka import KafkaSecurity
from libs.platform.service import ServiceDefinition

pytestmark = pytest.mark.contract

PREFIX = "acl-check."
README = Path(__file__).resolve().parents[2] / "README.md"


def _definition(service: str) -> ServiceDefinition[Any]:
    definition: ServiceDefinition[Any] = importlib.import_module(f"services.{service}.main").DEFINITION
    return definition


def subscribed(service: str) -> dict[str, str]:
    """Consumer group -> topic of every input the service's router binds (as the runtime does)."""
    definition = _definition(service)
    settings = definition.settings(
        kafka_bootstrap_servers="unused:9092", kafka_security=KafkaSecurity(), topic_prefix=PREFIX
    )
    return {
        settings.group(service, bound.name): settings.topic(bound.spec.topic)
        for bound in definition.router(settings).bind()
    }


def allowed(principal: str, operation: str, resource: str = "topic") -> set[str]:
    """Names (prefix removed) the table grants ``principal``; prefixed grants end in ``*``."""
    return {
        g.name.removeprefix(PREFIX) + ("*" if g.pattern == "prefixed" else "")
        for g in grants(PREFIX)
        if g.principal == principal and g.operation == operation and g.resource == resource
    }


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_may_read_exactly_the_topics_its_router_subscribes_to_in_its_own_groups(
    service: str,
) -> None:
    groups = subscribed(service)
    topics_read = {t.removeprefix(PREFIX) for t in groups.values()}

    assert topics_read == set(SERVICE_TOPICS[service].reads)
    observed = set(next(s for s in TOPOLOGY if s.name == service).observes)
    assert allowed(service, "read") == topics_read | observed
    [group_grant] = allowed(service, "read", "group")
    assert all(g.startswith(PREFIX + group_grant.rstrip("*")) for g in groups)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_may_write_exactly_where_its_declared_events_go_and_its_dead_letters(service: str) -> None:
    """The router refuses to send an event type the topology does not declare for the service
    (tests/unit/test_routing.py), so the declared types are all it can emit; on top, the outside
    commands it sends for operators (notification's board) are declared as ``sends``."""
    topology = next(s for s in TOPOLOGY if s.name == service)
    declared = (*topology.emits, *topology.sends)
    destinations = {t for contract in declared for t in topics_for(contract)}

    assert destinations == set(SERVICE_TOPICS[service].writes)
    assert allowed(service, "write") == destinations | {dead_letter_topic(service)}
    assert allowed(service, "describe") == set()


def test_the_channel_may_only_submit_orders_and_cancel_requests() -> None:
    assert allowed("channel", "write") == set(CHANNEL_WRITES)
    assert {g.principal for g in grants()} == set(PRINCIPALS)
    assert [g for g in grants(PREFIX) if g.principal == "channel" and g.operation != "write"] == []


def test_the_reader_reads_only_public_topics_in_its_own_groups() -> None:
    assert allowed("reader", "read") == set(PUBLIC_TOPICS)
    assert not {topics.facts_topic(s) for s in topics.SERVICES} & set(PUBLIC_TOPICS)
    assert allowed("reader", "read", "group") == {"reader.*"}
    assert allowed("reader", "write") == set()


def test_the_operator_has_what_dlq_webhooks_privacy_and_top_need_and_no_consumer_group() -> None:
    assert allowed("operator", "read") == {dead_letter_topic(s) for s in SERVICES} | {topics.PRIVACY_ERASURES}
    assert allowed("operator", "write") == set(service_inputs())
    assert {
        topics.NOTIFICATION_SUBSCRIPTIONS,
        topics.NOTIFICATION_REDELIVERIES,
        topics.PRIVACY_ERASURE_REQUESTS,
    } <= allowed("operator", "write")
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
