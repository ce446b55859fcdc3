"""Fuzzing every input of every service through its real router's parser (``BoundInput.parse``).

Whatever arrives — arbitrary bytes, arbitrary JSON, or a valid message with one part mangled — the
parser never raises: it returns a contract object of a type the input carries, or a ``Rejected``
with a cause. What it returns can be stored: no parsed text holds a character ``Text`` refuses, and
the record's inbox id holds nothing PostgreSQL text cannot.

30 examples per test and input by default; ``BATON_FUZZ_EXAMPLES=2000`` searches longer.
"""

from __future__ import annotations

import json
import os
from importlib import import_module
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.contracts.envelope import Contract, refused_character
from libs.contracts.topics import SERVICES
from libs.platform.records import Incoming, Rejected
from libs.platform.routing import BoundInput, _type_name
from tests.support.samples import SAMPLES, replaced, sample_json

pytestmark = pytest.mark.unit

CAUSES = {"invalid_json", "schema_violation", "unknown_event_type"}
FUZZ = settings(
    max_examples=int(os.environ.get("BATON_FUZZ_EXAMPLES", "30")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _inputs() -> list[BoundInput[Any]]:
    bound = []
    for service in SERVICES:
        definition = import_module(f"services.{service}.main").DEFINITION
        bound += definition.router(definition.settings()).bind()
    return bound


INPUTS = _inputs()
IDS = [f"{b.service.name}.{b.name}" for b in INPUTS]

HOSTILE_TEXT = st.sampled_from(
    [
        "\x00",
        "\r\n",
        "\u2028",
        "\u2029",
        "\x85",
        "\x0b",
        "\u202e",
        "\ufeff",
        "\x1b[31m",
        "\udc80",
        "%s%n",
        "'; --",
    ]
)
TEXT = st.text() | st.builds(
    lambda a, h, b: a + h + b, st.text(max_size=8), HOSTILE_TEXT, st.text(max_size=8)
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
    | st.sampled_from(
        ["1e999999", "-0", "NaN", "9" * 5000, "2026-13-45T99:99:99Z", "00000000-0000-0000-0000-000000000000"]
    )
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=25,
)


def _headers(bound: BoundInput[Any]) -> st.SearchStrategy[dict[str, str]]:
    names = [_type_name(c) for c in bound.spec.carries]
    return st.fixed_dictionaries(
        {},
        optional={
            "event_type": st.sampled_from(names) | TEXT,
            "event_id": TEXT,
            "dlq-replayed-from": TEXT,
            "traceparent": TEXT,
        },
    )


def _check(bound: BoundInput[Any], record: Incoming) -> None:
    item = bound.parse(record)  # must not raise
    parsed = item.parsed
    if isinstance(parsed, Rejected):
        assert parsed.cause in CAUSES, parsed.cause
        assert isinstance(parsed.detail, str) and parsed.detail
    else:
        assert isinstance(parsed, bound.spec.carries), type(parsed)
        _assert_clean(parsed.model_dump(mode="json"))
    assert "\x00" not in item.message_id
    item.message_id.encode("utf-8")


def _assert_clean(value: Any) -> None:
    if isinstance(value, str):
        assert refused_character(value) is None, repr(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _assert_clean(k)
            _assert_clean(v)
    elif isinstance(value, list):
        for v in value:
            _assert_clean(v)


@pytest.mark.parametrize("bound", INPUTS, ids=IDS)
@FUZZ
@given(data=st.data())
def test_arbitrary_bytes_are_parsed_or_rejected_never_raised(
    bound: BoundInput[Any], data: st.DataObject
) -> None:
    value = data.draw(
        st.binary(max_size=2000) | st.sampled_from([b"", b"\x00", b"\xff\xfe", b"{", b"[]", b"null"])
    )
    key = data.draw(st.none() | TEXT)
    _check(
        bound,
        Incoming(
            bound.spec.topic, 0, data.draw(st.integers(0, 2**40)), key, value, data.draw(_headers(bound))
        ),
    )


@pytest.mark.parametrize("bound", INPUTS, ids=IDS)
@FUZZ
@given(data=st.data())
def test_arbitrary_json_is_parsed_or_rejected_never_raised(
    bound: BoundInput[Any], data: st.DataObject
) -> None:
    value = json.dumps(data.draw(JSON)).encode("utf-8", "surrogatepass")
    _check(bound, Incoming(bound.spec.topic, 0, 1, "k", value, data.draw(_headers(bound))))


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every node of a JSON value (the root included)."""
    found = [path]
    if isinstance(value, dict):
        found += [p for k, v in value.items() for p in _paths(v, (*path, k))]
    elif isinstance(value, list):
        found += [p for i, v in enumerate(value) for p in _paths(v, (*path, i))]
    return found


def _without(value: Any, path: tuple[str | int, ...]) -> Any:
    """``value`` with the node at ``path`` taken out."""
    *parent, last = path
    node = value
    for step in parent:
        node = node[step]
    holder = replaced(value, tuple(parent), None)
    if isinstance(node, dict):
        return replaced(holder, tuple(parent), {k: v for k, v in node.items() if k != last})
    return replaced(holder, tuple(parent), [v for i, v in enumerate(node) if i != last])


def _at(value: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def _mutated(draw: st.DrawFn, sample: dict[str, Any]) -> dict[str, Any]:
    """The sample with one to three of its parts mangled: replaced by anything, removed, a hostile
    character put into a text, a text made huge, a value wrapped in a list, an unknown field added."""
    message: Any = sample
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(message)))
        current = _at(message, path)
        kind = draw(st.sampled_from(["replace", "remove", "hostile", "huge", "wrap", "extra"]))
        if kind == "remove" and path:
            message = _without(message, path)
        elif kind == "hostile" and isinstance(current, str):
            cut = draw(st.integers(0, len(current)))
            message = replaced(message, path, current[:cut] + draw(HOSTILE_TEXT) + current[cut:])
        elif kind == "huge" and isinstance(current, str):
            message = replaced(message, path, (current or "x")[:8] * 20_000)
        elif kind == "wrap":
            message = replaced(message, path, [current])
        elif kind == "extra" and isinstance(current, dict):
            message = replaced(message, path, current | {draw(TEXT): draw(JSON)})
        else:
            message = replaced(message, path, draw(JSON))
    return message if isinstance(message, dict) else {"value": message}


@pytest.mark.parametrize("bound", INPUTS, ids=IDS)
@FUZZ
@given(data=st.data())
def test_mangled_valid_messages_are_parsed_or_rejected_never_raised(
    bound: BoundInput[Any], data: st.DataObject
) -> None:
    contract: type[Contract] = data.draw(st.sampled_from(bound.spec.carries))
    message = data.draw(_mutated(sample_json(contract)))
    headers = data.draw(_headers(bound))
    value = json.dumps(message).encode("utf-8", "surrogatepass")
    _check(bound, Incoming(bound.spec.topic, 0, 1, "k", value, headers))


@pytest.mark.parametrize("bound", INPUTS, ids=IDS)
def test_the_valid_samples_of_every_input_parse(bound: BoundInput[Any]) -> None:
    for contract in bound.spec.carries:
        assert contract in SAMPLES
        value = json.dumps(sample_json(contract)).encode()
        item = bound.parse(Incoming(bound.spec.topic, 0, 1, "k", value, {"event_type": _type_name(contract)}))
        assert isinstance(item.parsed, contract), item.parsed
