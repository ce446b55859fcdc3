"""Who may do what on Kafka: one principal per service and per outside role, least privilege.

The table is data, derived from what each service reads and writes according to the topology
(``libs/contracts/topology.py``), which the services' routers are checked against at start-up and
in the tests. ``baton acls apply`` writes it to the cluster; the README's ACL table is rendered from it.

- a **service** reads its inputs with its own consumer groups (``<prefix>baton.<service>.<input>``,
  one PREFIXED grant) and writes its outputs and its own dead-letter topic; nothing else, but for
  the topics it observes without a group (notification's board reads the dead-letter topics).
- an **edge process** (the HTTP gateway) writes what it emits on outsiders' behalf (orders and cancel
  requests) and reads the store topics it follows (the channel keys) without a consumer group.
- **channel** (web shop, marketplace, POS) may only submit orders, cancel, edit and return requests
  and the payment events of its orders (a channel relays its payment provider's events).
- **reader** (dashboards, analytics) reads the public topics in groups named ``<prefix>reader.*``.
- **operator** (the ``baton`` CLI): reads every dead-letter topic (``dlq list``) and the erasure
  outcomes (``privacy status``), writes every service input (``dlq replay`` sends a record back
  to where it came from; the ``webhooks``, ``api-keys`` and ``privacy erase`` commands write some
  of those inputs) and describes Baton's groups (``top``: lag and members).
- **admin** is a super user, used only by ``baton topics apply`` and ``baton acls apply``.

Every name is prefixed with ``BATON_TOPIC_PREFIX``, so environments sharing a cluster stay apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from libs.contracts.topics import (
    ORDERS_CANCEL_REQUESTED,
    ORDERS_EDIT_REQUESTED,
    ORDERS_SUBMITTED,
    PAYMENTS_UPDATES,
    PRIVACY_ERASURES,
    RETURNS_REQUESTED,
    SERVICES,
    TOPICS,
    dead_letter_topic,
)
from libs.contracts.topology import EDGES, TOPOLOGY

ResourceType = Literal["topic", "group"]
PatternType = Literal["literal", "prefixed"]
Operation = Literal["read", "write", "describe"]


@dataclass(frozen=True)
class ServiceTopics:
    """The topics a service consumes and the topics it produces to (its dead letters come on top)."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]


SERVICE_TOPICS: dict[str, ServiceTopics] = {
    s.name: ServiceTopics(reads=s.reads, writes=tuple(t for t in s.writes if t != dead_letter_topic(s.name)))
    for s in TOPOLOGY
}
"""What each service reads and writes, from the topology data (`libs/contracts/topology.py`)."""

CHANNEL_WRITES = (
    ORDERS_SUBMITTED,
    ORDERS_CANCEL_REQUESTED,
    ORDERS_EDIT_REQUESTED,
    RETURNS_REQUESTED,
    PAYMENTS_UPDATES,
)
OPERATOR_READS = (*(dead_letter_topic(s) for s in SERVICES), PRIVACY_ERASURES)
"""``dlq list`` reads the dead letters, ``privacy status`` what each service erased."""
PUBLIC_TOPICS = tuple(spec.name for spec in TOPICS if spec.public)
READER_GROUP_PREFIX = "reader."
SERVICE_GROUP_PREFIX = "baton."
PRINCIPALS = (*SERVICES, *(e.name for e in EDGES), "channel", "reader", "operator")
"""Principals with ACLs (the admin is a super user and has none)."""


def service_writes(service: str) -> tuple[str, ...]:
    return (*SERVICE_TOPICS[service].writes, dead_letter_topic(service))


def service_inputs() -> tuple[str, ...]:
    """Every topic some service consumes: where ``baton dlq replay`` may send a record back."""
    return tuple(dict.fromkeys(t for s in SERVICES for t in SERVICE_TOPICS[s].reads))


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW binding: ``principal`` may ``operation`` on the resource (names already prefixed)."""

    principal: str
    resource: ResourceType
    pattern: PatternType
    name: str
    operation: Operation


def grants(prefix: str = "") -> list[Grant]:
    """The whole table for one environment (``BATON_TOPIC_PREFIX``), sorted."""
    rows: set[Grant] = set()

    def allow(principal: str, resource: ResourceType, pattern: PatternType, name: str, op: Operation) -> None:
        rows.add(Grant(principal, resource, pattern, prefix + name, op))

    for service in SERVICES:
        for topic in SERVICE_TOPICS[service].reads:
            allow(service, "topic", "literal", topic, "read")
        allow(service, "group", "prefixed", f"{SERVICE_GROUP_PREFIX}{service}.", "read")
        for topic in service_writes(service):
            allow(service, "topic", "literal", topic, "write")
    for observer in TOPOLOGY:
        for topic in observer.observes:
            allow(observer.name, "topic", "literal", topic, "read")
    for edge in EDGES:
        for topic in edge.writes:
            allow(edge.name, "topic", "literal", topic, "write")
        for topic in edge.follows:
            allow(edge.name, "topic", "literal", topic, "read")
    for topic in CHANNEL_WRITES:
        allow("channel", "topic", "literal", topic, "write")
    for topic in PUBLIC_TOPICS:
        allow("reader", "topic", "literal", topic, "read")
    allow("reader", "group", "prefixed", READER_GROUP_PREFIX, "read")
    for topic in OPERATOR_READS:
        allow("operator", "topic", "literal", topic, "read")
    for topic in service_inputs():
        allow("operator", "topic", "literal", topic, "write")
    allow("operator", "group", "prefixed", SERVICE_GROUP_PREFIX, "describe")
    return sorted(rows)


def table_rows(prefix: str = "") -> list[tuple[str, str, str, list[str]]]:
    """The ACL table's rows: principal, operation, resource kind, names (``*`` ends a prefix)."""
    merged: dict[tuple[str, str, str, str], list[str]] = {}
    for g in grants(prefix):
        merged.setdefault((g.principal, g.resource, g.pattern, g.operation), []).append(g.name)
    order = {p: i for i, p in enumerate(PRINCIPALS)}
    return [
        (principal, operation, f"{resource}s", [f"{n}*" if pattern == "prefixed" else n for n in names])
        for (principal, resource, pattern, operation), names in sorted(
            merged.items(), key=lambda item: (order[item[0][0]], item[0][1:])
        )
    ]


def render_markdown(prefix: str = "") -> str:
    """The ACL table as the README shows it: one row per principal and resource pattern."""
    lines = ["| principal | may | on | names |", "|---|---|---|---|"]
    for principal, operation, resources, names in table_rows(prefix):
        shown = ", ".join(f"`{n}`" for n in names)
        lines.append(f"| `{principal}` | {operation} | {resources} | {shown} |")
    return "\n".join(lines) + "\n"
