"""Renders Baton's AsyncAPI 3 document from the topology (`topology.py`) and the topic table (`topics.py`).

``baton contracts`` writes it to ``docs/asyncapi.yaml``; a test fails when it is stale, another
validates it with the official AsyncAPI parser. Nothing in it is written by hand: a topic added to
the table gets its channel, a contract added to an input or to ``PUBLISHED_ON`` its message and
operations, a service added to the topology its operations.

- **Channels**: one per topic (public, internal order facts, commands, dead letters) with its Kafka
  bindings (partitions, replicas, retention) and, in words, who writes and who reads it.
- **Messages**: one per contract, its payload the contract's JSON Schema, its headers (Baton's and
  the CloudEvents binary-mode ones, ``headers.py``) and its key; one ``DeadLetter`` message for the
  dead-letter topics.
- **Operations** are Baton's own, from Baton's point of view, per service: each input is a
  ``receive`` with its consumer group, each topic the service writes a ``send``. Outside parties
  (channels, warehouses, support, operators) get none: an AsyncAPI document describes one
  application, and tools generate code for each operation; each channel names who writes it.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import yaml

from libs.contracts import headers, topics
from libs.contracts.envelope import Contract, Event
from libs.contracts.topology import (
    EDGES,
    OUTSIDE_PRODUCERS,
    PUBLISHED_ON,
    TOPOLOGY,
    ServiceTopology,
    topics_for,
)

KAFKA_BINDINGS_VERSION = "0.5.0"
"""The newest Kafka bindings version the AsyncAPI parser (3.x) knows."""

DEAD_LETTER = "DeadLetter"
HEADER_SCHEMAS = {
    "EventHeaders": headers.EVENT_HEADERS,
    "InputHeaders": headers.INPUT_HEADERS,
    "DeadLetterHeaders": headers.DEAD_LETTER_HEADERS,
}

INTRODUCTION = """\
Events exchanged by Baton's five services (intake, validation, allocation, fulfillment,
notification) and with the systems around them: channels submit orders, the catalog and operations
publish products, locations and stock, warehouses and carriers report progress, support decides on
held orders, and anyone may follow the public topics.

**Reading this document.** Each channel is a Kafka topic. Operations are Baton's, per service (tag =
service): a service's inputs are `receive` operations with their consumer group, the topics it writes
are `send` operations. Topic and consumer group names are shown without the environment's
`BATON_TOPIC_PREFIX`, which is prepended to both where it is set.

**Records.** The value is JSON (money is a decimal string, times are ISO-8601 UTC); the key is the
aggregate id, so one aggregate's records stay in order on one partition. Consumers must tolerate
fields and headers they do not know: within a topic version, changes are additive only.

**CloudEvents.** Every event Baton publishes is a CloudEvent in the Kafka protocol binding's binary
mode: `ce_specversion` = `1.0`, `ce_id` = `event_id`, `ce_source` = `/baton/<service>`, `ce_type` =
`event_type` (unprefixed), `ce_time` = `occurred_at`, `ce_subject` = the record's key;
`content-type` is `application/json` and the key is the CloudEvents `partitionkey`.

**Delivery.** At least once, in order per key: events leave through each service's outbox after
the transaction that caused them commits; consumers deduplicate on `event_id` (or, for input from
outside, the record's position). A record a service cannot apply goes to its dead-letter topic.
"""


def _event_type(contract: type[Contract]) -> str | None:
    """The ``event_type`` of a Baton event (its literal default); None for input from outside."""
    if not issubclass(contract, Event):
        return None
    field = contract.model_fields.get("event_type")
    default = field.default if field is not None else None
    return default if isinstance(default, str) else None


def _is_dead_letters(topic: str) -> bool:
    return any(topic == topics.dead_letter_topic(s) for s in topics.SERVICES)


def _is_facts(topic: str) -> bool:
    return any(topic == topics.facts_topic(s) for s in topics.SERVICES)


def _owner(topic: str) -> str:
    """The service a facts or dead-letter topic belongs to (its name's first part)."""
    return topic.split(".", 1)[0]


def _carried(topic: str) -> tuple[type[Contract], ...]:
    """The contracts on a topic: published there, read from it by a service, or routed to it."""
    found: list[type[Contract]] = [c for c, t in PUBLISHED_ON.items() if t == topic]
    for service in TOPOLOGY:
        found += [c for i in service.inputs if i.topic == topic for c in i.carries]
        found += [c for c in (*service.emits, *service.sends) if topic in topics_for(c)]
    return tuple(dict.fromkeys(found))


def _emitted_to(service: ServiceTopology, topic: str) -> tuple[type[Contract], ...]:
    return tuple(c for c in (*service.emits, *service.sends) if topic in topics_for(c))


def _docstring(contract: type[Contract]) -> tuple[str, str]:
    """(summary, description) from the contract's own docstring (not an inherited one)."""
    own = contract.__dict__.get("__doc__")
    if not own:
        return "", ""
    first, _, rest = inspect.cleandoc(own).partition("\n")
    return first.strip(), rest.strip()


def _title(name: str) -> str:
    words = re.findall(r"[A-Z][a-z0-9]*", name)
    return " ".join([words[0], *(w.lower() for w in words[1:])]) if words else name


class _Dumper(yaml.SafeDumper):
    """Text of several lines as YAML literal blocks, so the document reads like its source; no
    anchors and aliases, which some tools do not follow."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _text)


class _Renderer:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = dict(HEADER_SCHEMAS)
        self.messages: dict[str, Any] = {}
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.keys: dict[str, list[str]] = {}

    def document(self) -> dict[str, Any]:
        carried = {spec.name: _carried(spec.name) for spec in topics.TOPICS}
        for spec in topics.TOPICS:
            for contract in carried[spec.name]:
                self.keys.setdefault(contract.__name__, []).append(spec.key)
        for spec in topics.TOPICS:
            self.channels[spec.name] = self.channel(spec, carried[spec.name])
        for service in TOPOLOGY:
            self.service_operations(service)
        return {
            "asyncapi": "3.0.0",
            "info": {
                "title": "Baton order orchestration",
                "version": "1.0.0",
                "description": INTRODUCTION,
                "license": {"name": "Apache-2.0"},
                "tags": [
                    {"name": s.name, "description": f"Operations of the {s.name} service"} for s in TOPOLOGY
                ],
            },
            "defaultContentType": headers.JSON,
            "servers": {
                "local": {
                    "host": "127.0.0.1:19092",
                    "protocol": "kafka",
                    "description": "The local broker `make run` and `baton stack up` start (PLAINTEXT).",
                },
                "local-secured": {
                    "host": "127.0.0.1:19094",
                    "protocol": "kafka-secure",
                    "description": "The secured local broker of `baton stack up --secure`: SASL_SSL, one "
                    "principal per service, ACLs as `baton acls list` shows.",
                    "security": [{"$ref": "#/components/securitySchemes/scram"}],
                },
            },
            "channels": self.channels,
            "operations": self.operations,
            "components": {
                "schemas": self.schemas,
                "messages": self.messages,
                "securitySchemes": {
                    "scram": {
                        "type": "scramSha512",
                        "description": "SCRAM-SHA-512 (or -256) login of the principal: a service's own, or "
                        "`channel`, `reader`, `operator` for the outside roles",
                    }
                },
            },
        }

    def channel(self, spec: topics.TopicSpec, carried: tuple[type[Contract], ...]) -> dict[str, Any]:
        if _is_dead_letters(spec.name):
            names = [self.dead_letter_message()]
        else:
            names = [self.message(contract) for contract in carried]
        return {
            "address": spec.name,
            "description": self.channel_description(spec),
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
            "tags": [{"name": "public" if spec.public else "internal"}],
            "bindings": {
                "kafka": {
                    "partitions": spec.partitions,
                    "replicas": topics.DEFAULT_REPLICATION_FACTOR,
                    "topicConfiguration": (
                        {"cleanup.policy": ["compact"]}
                        if spec.compacted
                        else {"retention.ms": spec.retention_hours * 3600 * 1000}
                    ),
                    "bindingVersion": KAFKA_BINDINGS_VERSION,
                }
            },
        }

    def channel_description(self, spec: topics.TopicSpec) -> str:
        writers = [s.name for s in TOPOLOGY if spec.name in s.writes]
        readers = [
            f"{s.name} (group `{s.group(i.name)}`)"
            for s in TOPOLOGY
            for i in s.inputs
            if i.topic == spec.name
        ] + [f"{e.name} (every process reads it whole, in no group)" for e in EDGES if spec.name in e.follows]
        if _is_dead_letters(spec.name):
            kind = (
                f"Internal: the records {_owner(spec.name)} gave up on, as they came, with `dlq-*` headers "
                "naming the cause and where each came from. `baton dlq list` shows them; `baton dlq "
                "replay` sends them back to their source topic once the cause is fixed."
            )
            readers = ["operators (`baton dlq list`, `baton dlq replay`)"] + [
                f"{s.name} (the fulfillment board's dead-letter list, no consumer group)"
                for s in TOPOLOGY
                if spec.name in s.observes
            ]
        elif _is_facts(spec.name):
            kind = (
                f"Internal: the order facts {_owner(spec.name)} handles. Each consuming service has a facts "
                "topic of its own, so it fetches only what it handles, in the order it was written."
            )
        elif spec.public:
            kind = "Public: anyone may follow it (principal `reader`, consumer groups `reader.*`)."
        else:
            kind = "Internal: not for subscribers outside Baton."
        if spec.name in OUTSIDE_PRODUCERS or not writers:
            writers += [f"{OUTSIDE_PRODUCERS.get(spec.name, 'other systems')}, outside Baton"]
        if not readers:
            readers = ["subscribers outside Baton"]
        days = spec.retention_hours / 24
        kept = (
            "compacted: the last record of each key is kept for good (a store, read from its beginning)"
            if spec.compacted
            else f"records kept {days:g} days"
        )
        return (
            f"{kind}\n\n- Written by: {', '.join(writers)}\n- Read by: {', '.join(readers)}\n"
            f"- Key: {spec.key}; {spec.partitions} partition{'s' if spec.partitions != 1 else ''}; {kept}"
        )

    def message(self, contract: type[Contract]) -> str:
        name = contract.__name__
        if name in self.messages:
            return name
        self.add_schema(contract)
        summary, description = _docstring(contract)
        event_type = _event_type(contract)
        producers = [s.name for s in TOPOLOGY if contract in s.emits]
        message: dict[str, Any] = {
            "name": name,
            "title": _title(name),
            "summary": summary or (f"`{event_type}`" if event_type else _title(name)),
        }
        if description:
            message["description"] = description
        message["contentType"] = headers.JSON
        if event_type and producers:
            message["headers"] = {
                "type": "object",
                "allOf": [
                    {"$ref": "#/components/schemas/EventHeaders"},
                    {
                        "properties": {
                            headers.EVENT_TYPE: {"const": event_type},
                            headers.CE_TYPE: {"const": event_type},
                            headers.CE_SOURCE: {"enum": [headers.cloudevents_source(p) for p in producers]},
                        }
                    },
                ],
            }
        else:
            message["headers"] = {"$ref": "#/components/schemas/InputHeaders"}
        message["payload"] = {"$ref": f"#/components/schemas/{name}"}
        message["bindings"] = {
            "kafka": {
                "key": {"type": "string", "description": " / ".join(dict.fromkeys(self.keys.get(name, [])))},
                "bindingVersion": KAFKA_BINDINGS_VERSION,
            }
        }
        self.messages[name] = message
        return name

    def add_schema(self, contract: type[Contract]) -> None:
        """The contract's JSON Schema (as Baton serialises it) and the models it uses, each once."""
        schema = contract.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        for name, definition in {**schema.pop("$defs", {}), contract.__name__: schema}.items():
            if self.schemas.setdefault(name, definition) != definition:
                raise ValueError(f"two different schemas are both named {name}")

    def dead_letter_message(self) -> str:
        if DEAD_LETTER not in self.messages:
            self.messages[DEAD_LETTER] = {
                "name": DEAD_LETTER,
                "title": "Dead letter",
                "summary": "A record a service gave up on, exactly as it came, with headers saying why.",
                "description": "The value is the original record's value byte for byte (cut at 512 KB, see "
                "`dlq-truncated`), so it may be anything, even invalid JSON; the key and every header are "
                "the original's too, so a replay restores the record exactly. notification also "
                "dead-letters a webhook delivery that exhausted its attempts: its body, keyed by its "
                "subscription id.",
                "contentType": "application/octet-stream",
                "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
                "payload": {"description": "The original record's value"},
                "bindings": {
                    "kafka": {
                        "key": {"type": "string", "description": "The original record's key"},
                        "bindingVersion": KAFKA_BINDINGS_VERSION,
                    }
                },
            }
        return DEAD_LETTER

    def service_operations(self, service: ServiceTopology) -> None:
        tags = [{"name": service.name}]
        for spec in service.inputs:
            group = service.group(spec.name)
            self.operations[f"{service.name}.receive.{spec.name}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{spec.topic}"},
                "summary": f"{service.name} reads {', '.join(c.__name__ for c in spec.carries)}",
                "description": f"Consumer group `{group}` (one per input). Offsets are committed once the "
                "records are applied; a record that cannot be applied goes to "
                f"`{topics.dead_letter_topic(service.name)}`.",
                "tags": tags,
                "messages": [
                    {"$ref": f"#/channels/{spec.topic}/messages/{c.__name__}"} for c in spec.carries
                ],
                "bindings": {
                    "kafka": {
                        "groupId": {"type": "string", "enum": [group]},
                        "clientId": {"type": "string", "pattern": f"^{service.client_id(spec.name, '')}"},
                        "bindingVersion": KAFKA_BINDINGS_VERSION,
                    }
                },
            }
        for topic in service.writes:
            if _is_dead_letters(topic):
                names = [DEAD_LETTER]
                summary = f"{service.name} dead-letters what it cannot apply"
            else:
                names = [c.__name__ for c in _emitted_to(service, topic)]
                summary = f"{service.name} publishes {', '.join(names)}"
            self.operations[f"{service.name}.send.{topic}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{topic}"},
                "summary": summary,
                "description": "Sent from the service's outbox by its relay once the transaction that caused "
                "them commits, in the order written.",
                "tags": tags,
                "messages": [{"$ref": f"#/channels/{topic}/messages/{name}"} for name in names],
                "bindings": {
                    "kafka": {
                        "clientId": {"type": "string", "pattern": f"^{service.client_id('relay', '')}"},
                        "bindingVersion": KAFKA_BINDINGS_VERSION,
                    }
                },
            }


def render_asyncapi() -> str:
    return yaml.dump(_Renderer().document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
