"""Renders Baton's AsyncAPI 3 document from the contract models and topic table.

``baton contracts`` writes it to ``docs/asyncapi.yaml``; a test fails when it is stale.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from libs.contracts import topics
from libs.contracts.topology import PUBLISHED_ON, TOPOLOGY


def _messages() -> dict[str, tuple[type[BaseModel], ...]]:
    """The contracts each topic carries, from the topology data."""
    carried: dict[str, list[type[BaseModel]]] = {}
    for contract, topic in PUBLISHED_ON.items():
        carried.setdefault(topic, []).append(contract)
    for service in TOPOLOGY:
        for spec in service.inputs:
            if spec.topic == topics.facts_topic(service.name):
                carried.setdefault(spec.topic, []).extend(spec.carries)
    return {topic: tuple(dict.fromkeys(models)) for topic, models in carried.items()}


MESSAGES = _messages()


def _channel_id(topic: str) -> str:
    return topic.replace(".", "_").replace("-", "_")


def render_asyncapi() -> str:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in topics.TOPICS:
        models = MESSAGES.get(spec.name)
        if not models:
            continue
        channel_id = _channel_id(spec.name)
        channel_messages = {}
        for model in models:
            schema = model.model_json_schema(
                ref_template="#/components/schemas/{model}", mode="serialization"
            )
            for name, definition in schema.pop("$defs", {}).items():
                schemas[name] = definition
            schemas[model.__name__] = schema
            messages[model.__name__] = {
                "name": model.__name__,
                "contentType": "application/json",
                "summary": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else model.__name__,
                "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
            }
            channel_messages[model.__name__] = {"$ref": f"#/components/messages/{model.__name__}"}
        channels[channel_id] = {
            "address": spec.name,
            "description": f"{'Public' if spec.public else 'Internal'} topic; key: {spec.key}; "
            f"{spec.partitions} partitions.",
            "messages": channel_messages,
        }
        operations[f"{channel_id}_publish"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
        }
    document = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Baton order orchestration",
            "version": "1.0.0",
            "description": "Events exchanged by Baton's services and with channels, warehouses and "
            "downstream subscribers. Every topic carries JSON; money is a decimal string; times are "
            "ISO-8601 UTC; the message key is the aggregate id.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:19092", "protocol": "kafka"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=110)
