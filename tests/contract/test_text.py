"""Text that cannot break anything: every free-text field of every contract refuses control and
format characters, line separators and NUL, and a record carrying one is a `schema_violation`
naming the field."""

from __future__ import annotations

import types
import typing
import unicodedata
from typing import Annotated, Any, Union, get_args, get_origin

import orjson
import pytest
from pydantic import AfterValidator, BaseModel, Field, TypeAdapter, ValidationError

from libs.contracts import catalog, envelope, fulfillment, inventory, lifecycle, notification, orders
from libs.contracts.envelope import Contract, Text, refused_character, text_pattern
from libs.contracts.orders import OrderSubmitted
from libs.contracts.topology import TOPOLOGY
from libs.platform.records import Incoming, Rejected
from libs.platform.routing import BoundInput, WholeBatch
from tests.support.orders import order
from tests.support.samples import SAMPLES, replaced, sample_json, text_paths

pytestmark = pytest.mark.contract

HOSTILE = {
    "CR LF": "\r\n",
    "LF": "\n",
    "tab": "\t",
    "vertical tab": "\x0b",
    "NEL": "\x85",
    "NUL": "\x00",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "right-to-left override": "\u202e",
    "zero-width space": "\u200b",
    "byte order mark": "\ufeff",
    "escape": "\x1b",
    "delete": "\x7f",
}


def _contracts() -> list[type[Contract]]:
    modules = (envelope, orders, catalog, fulfillment, inventory, lifecycle, notification)
    found = {
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Contract)
    }
    return sorted(found, key=lambda c: c.__name__)


def _is_text(annotation: Any, metadata: list[Any]) -> bool:
    return annotation is str and any(
        isinstance(m, AfterValidator) and m.func is envelope._printable for m in metadata
    )


def _loose_strings(annotation: Any, metadata: list[Any], where: str) -> list[str]:
    """The places under ``annotation`` where a plain ``str`` is accepted (not ``Text``)."""
    if annotation is str:
        return [] if _is_text(annotation, metadata) else [where]
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return _loose_strings(inner, [*metadata, *extra], where)
    if origin is typing.Literal:
        return []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return []  # checked as a contract of its own
    if origin in (Union, types.UnionType, list, tuple, dict, set, frozenset):
        return [p for arg in get_args(annotation) for p in _loose_strings(arg, [], where)]
    return []


def test_every_free_text_field_of_every_contract_is_text() -> None:
    loose = [
        p
        for contract in _contracts()
        for name, field in contract.model_fields.items()
        for p in _loose_strings(field.annotation, list(field.metadata), f"{contract.__name__}.{name}")
    ]
    assert loose == [], f"declare these as `Text` (libs/contracts/envelope.py): {loose}"


def test_every_input_contract_has_a_sample() -> None:
    carried = {c for s in TOPOLOGY for i in s.inputs for c in i.carries}
    assert carried - SAMPLES.keys() == set(), "add a sample to tests/support/samples.py"


def _inputs() -> list[tuple[str, BoundInput[Any], type[Contract]]]:
    return [
        (f"{service.name}.{spec.name}.{contract.__name__}", bound, contract)
        for service in TOPOLOGY
        for spec in service.inputs
        for bound in [BoundInput(service, spec, [], WholeBatch(), lambda conn: conn)]
        for contract in spec.carries
    ]


@pytest.mark.parametrize("name,bound,contract", _inputs(), ids=[n for n, _, _ in _inputs()])
def test_hostile_text_in_any_field_is_a_schema_violation_naming_the_field(
    name: str, bound: BoundInput[Any], contract: type[Contract]
) -> None:
    sample = sample_json(contract)
    headers = {"event_type": str(sample["event_type"])} if "event_type" in sample else {}
    clean = bound.parse(Incoming("t", 0, 0, "k", orjson.dumps(sample), headers)).parsed
    assert isinstance(clean, contract), clean
    paths = text_paths(sample)
    assert paths, f"{name}: the sample has no text"
    for path in paths:
        value: str = _at(sample, path)
        middle = len(value) // 2
        for label, char in HOSTILE.items():
            hostile = value[:middle] + char + value[middle:] if len(value) >= 2 else f"a{char}b"
            record = Incoming("t", 0, 1, "k", orjson.dumps(replaced(sample, path, hostile)), headers)
            parsed = bound.parse(record).parsed
            where = ".".join(str(p) for p in path)
            assert isinstance(parsed, Rejected), f"{name}: {label} in {where} was accepted"
            assert parsed.cause == "schema_violation", (name, where, label, parsed.detail)
            assert f"{where}:" in parsed.detail, (name, where, label, parsed.detail)


def _at(value: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def test_an_order_whose_customer_name_or_external_id_has_a_control_character_is_refused() -> None:
    for field, bad in (("external_id", "A-1\r\nBcc: x@evil"), ("external_id", "A-1\x00")):
        with pytest.raises(ValidationError, match=field):
            OrderSubmitted.model_validate(order() | {field: bad})
    for bad in ("Ada\u2028Lovelace", "Ada\rBcc: evil@x", "Ada\x0bL", "Ada\x85L"):
        payload = order()
        payload["customer"] = payload["customer"] | {"name": bad}
        with pytest.raises(ValidationError, match=r"customer\.name|name"):
            OrderSubmitted.model_validate(payload)


def test_letters_of_every_script_and_joined_emoji_are_text() -> None:
    names = [
        "Zoë Ångström",
        "\u0645\u062d\u0645\u062f\u200c\u0631\u0636\u0627",  # a Persian name with a ZWNJ
        "Łukasz Żółć",
        "山田 太郎",
        "👩\u200d👩\u200d👧",
        "O'Brien-Smith",
    ]
    adapter = TypeAdapter(Text)
    assert [adapter.validate_python(n) for n in names] == names


def test_leading_and_trailing_whitespace_is_stripped_rather_than_refused() -> None:
    payload = order()
    payload["customer"] = payload["customer"] | {"name": "  Ada\u2028"}
    assert OrderSubmitted.model_validate(payload).customer.name == "Ada"


def test_the_pattern_in_the_asyncapi_document_states_the_same_rule() -> None:
    """Checked with pydantic's Rust regex engine, as a schema consumer would; characters unassigned in
    this Python's Unicode version are left out (the engines' versions differ)."""
    documented = TypeAdapter(Annotated[str, Field(pattern=text_pattern())])

    def documented_accepts(text: str) -> bool:
        try:
            documented.validate_python(text)
        except ValidationError:
            return False
        return True

    refused = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) in {"Cc", "Cf", "Zl", "Zp"}]
    others = [chr(c) for c in range(0, 0x110000, 97) if unicodedata.category(chr(c)) not in {"Cn", "Cs"}]
    for char in [*refused, *others]:
        text = f"a{char}b"
        assert documented_accepts(text) == (refused_character(text) is None), f"U+{ord(char):04X}"


def test_lone_surrogates_are_refused() -> None:
    assert refused_character("a\udc80b") == "\udc80"
