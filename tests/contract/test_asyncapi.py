"""The AsyncAPI document: valid for the official parser, and true to the topology and the records.

The parser (npm `@asyncapi/parser`, pinned by `tests/contract/asyncapi/package-lock.json`, installed
by `make install`) runs under Node.js; any error or warning it reports fails the test. The other
tests read the rendered document and hold it against the topic table, the topology, and the
headers Baton really puts on its records.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from libs.contracts import topics
from libs.contracts.asyncapi import render_asyncapi
from libs.contracts.envelope import Contract, Event
from libs.contracts.topology import PUBLISHED_ON, TOPOLOGY, topics_for
from libs.platform.records import REPLAYED_FROM_HEADER, Incoming, Outgoing, dead_letter, dead_letter_of

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "tests/contract/asyncapi"
DOCUMENT_URI = "urn:baton:asyncapi"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(render_asyncapi())
    return loaded


def parse_with_the_official_parser(*files: Path) -> dict[str, dict[str, Any]]:
    """File -> what `validate.mjs` reported for it (the AsyncAPI version and the diagnostics)."""
    node = shutil.which("node")
    assert node is not None, "Node.js 20+ must be on the PATH to run the AsyncAPI parser"
    assert (VALIDATOR / "node_modules/@asyncapi/parser").is_dir(), (
        "the AsyncAPI parser is not installed: run `make install` (npm ci --prefix tests/contract/asyncapi)"
    )
    done = subprocess.run(
        [node, str(VALIDATOR / "validate.mjs"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode in (0, 1), f"validate.mjs failed: {done.stderr}"
    reports = [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {report["file"]: report for report in reports}


def fatal(report: dict[str, Any]) -> list[str]:
    return [
        f"{d['severity']} {d['code']} at {d['path']}: {d['message']}"
        for d in report["diagnostics"]
        if d["severity"] in ("error", "warning")
    ]


def test_the_document_passes_the_official_asyncapi_parser_with_no_error_or_warning(tmp_path: Path) -> None:
    rendered = tmp_path / "asyncapi.yaml"
    rendered.write_text(render_asyncapi())
    broken_document = yaml.safe_load(rendered.read_text())
    receive = broken_document["operations"]["intake.receive.order_submitted"]
    receive["messages"].append({"$ref": "#/channels/orders.status.v1/messages/OrderStatusChanged"})
    broken_document["channels"]["orders.status.v1"]["bindings"]["kafka"]["partitions"] = 0
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(broken_document))

    reports = parse_with_the_official_parser(rendered, broken)

    assert reports[str(rendered)]["asyncapi"] == "3.0.0"
    assert fatal(reports[str(rendered)]) == []
    caught = "\n".join(fatal(reports[str(broken)]))
    assert "does not belong to the specified channel" in caught, "the parser must catch a wrong message"
    assert "partitions" in caught, "the parser must check the Kafka bindings"


def test_every_topic_is_a_channel_with_its_partitions_replicas_and_retention(
    document: dict[str, Any],
) -> None:
    channels = document["channels"]
    assert [c["address"] for c in channels.values()] == [spec.name for spec in topics.TOPICS]
    for spec in topics.TOPICS:
        kafka = channels[spec.name]["bindings"]["kafka"]
        assert kafka["partitions"] == spec.partitions
        assert kafka["replicas"] == topics.DEFAULT_REPLICATION_FACTOR
        if spec.compacted:  # a store (the channel keys): kept by key, never by age
            assert kafka["topicConfiguration"] == {"cleanup.policy": ["compact"]}
        else:
            assert kafka["topicConfiguration"]["retention.ms"] == spec.retention_hours * 3_600_000
        assert channels[spec.name]["messages"], f"{spec.name} documents no message"
    for service in topics.SERVICES:
        assert list(channels[topics.dead_letter_topic(service)]["messages"]) == ["DeadLetter"]


def test_each_service_receives_its_inputs_in_their_groups_and_sends_to_every_topic_it_writes(
    document: dict[str, Any],
) -> None:
    operations = document["operations"]
    expected_receives = {
        (s.name, i.topic, s.group(i.name), tuple(c.__name__ for c in i.carries))
        for s in TOPOLOGY
        for i in s.inputs
    }
    receives = {
        (
            op["tags"][0]["name"],
            _channel(op),
            op["bindings"]["kafka"]["groupId"]["enum"][0],
            tuple(_message(m) for m in op["messages"]),
        )
        for op in operations.values()
        if op["action"] == "receive"
    }
    assert receives == expected_receives
    sends = {(op["tags"][0]["name"], _channel(op)) for op in operations.values() if op["action"] == "send"}
    assert sends == {(s.name, topic) for s in TOPOLOGY for topic in s.writes}
    for op in operations.values():
        if op["action"] == "send" and not _channel(op).endswith(".dead-letters.v1"):
            service = next(s for s in TOPOLOGY if s.name == op["tags"][0]["name"])
            emitted = {c.__name__ for c in (*service.emits, *service.sends) if _channel(op) in topics_for(c)}
            assert {_message(m) for m in op["messages"]} == emitted
    assert {op["action"] for op in operations.values()} == {"receive", "send"}


def _channel(operation: dict[str, Any]) -> str:
    return str(operation["channel"]["$ref"]).removeprefix("#/channels/")


def _message(reference: dict[str, str]) -> str:
    return reference["$ref"].rsplit("/", 1)[1]


def test_every_contract_has_a_message_with_its_payload_and_key(document: dict[str, Any]) -> None:
    contracts: set[type[Contract]] = set(PUBLISHED_ON)
    for service in TOPOLOGY:
        contracts |= {*service.emits, *(c for i in service.inputs for c in i.carries)}
    messages = document["components"]["messages"]
    for contract in contracts:
        message = messages[contract.__name__]
        assert message["payload"] == {"$ref": f"#/components/schemas/{contract.__name__}"}
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        assert message["bindings"]["kafka"]["key"]["description"]
        assert contract.__name__ in document["components"]["schemas"]


def headers_problems(document: dict[str, Any], pointer: str, record_headers: dict[str, str]) -> list[str]:
    """What is wrong with real headers against the schema at ``pointer`` in the document."""
    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    validator = Draft202012Validator(
        {"$ref": f"{DOCUMENT_URI}#{pointer}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(record_headers)]


def test_the_headers_of_every_event_a_service_publishes_match_its_message(document: dict[str, Any]) -> None:
    documented = set(document["components"]["schemas"]["EventHeaders"]["properties"])
    for service in TOPOLOGY:
        for contract in service.emits:
            assert issubclass(contract, Event)
            kind = contract.model_fields["event_type"].default
            event = contract.model_construct(event_type=kind)  # headers need only the envelope
            [record] = Outgoing.events(["t"], "order-1", event, producer=service.name)
            record_headers = record.headers | {"traceparent": f"00-{uuid4().hex}-{uuid4().hex[:16]}-01"}
            pointer = f"/components/messages/{contract.__name__}/headers"
            assert headers_problems(document, pointer, record_headers) == [], (service.name, contract)
            assert set(record_headers) <= documented
            other = "/baton/someone-else"
            assert headers_problems(document, pointer, record_headers | {"ce_source": other}), (
                "the producer is part of the documented headers"
            )


def test_dead_letters_carry_the_documented_dlq_headers(document: dict[str, Any]) -> None:
    documented = set(document["components"]["schemas"]["DeadLetterHeaders"]["properties"])
    record = Incoming("orders.submitted.v1", 3, 42, "web:1", b"{oops", {"traceparent": "x", "other": "y"})
    letters = [
        dead_letter(
            topics.dead_letter_topic("intake"),
            record,
            "invalid_json",
            "not JSON",
            source_id=record.position,
        ),
        dead_letter_of(
            topics.dead_letter_topic("notification"),
            key="sub_1",
            value=b"{}",
            cause="webhook_undeliverable",
            detail="HTTP 500",
            headers={"dlq-delivery-id": "msg_1", "dlq-subscription-id": "sub_1"},
        ),
    ]
    for letter in letters:
        assert headers_problems(document, "/components/schemas/DeadLetterHeaders", letter.headers) == []
        assert {k for k in letter.headers if k.startswith("dlq-")} <= documented
    assert headers_problems(document, "/components/schemas/DeadLetterHeaders", {"dlq-cause": "x"})
    assert REPLAYED_FROM_HEADER in document["components"]["schemas"]["InputHeaders"]["properties"]
