"""The envelope every Baton event carries, and the rules for reading untrusted input."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


def utcnow() -> datetime:
    return datetime.now(UTC)


Money = Annotated[
    Decimal,
    Field(max_digits=14, decimal_places=4, description='A decimal string, e.g. "19.90"; never a float'),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json"),
]


REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
"""Controls (NUL, CR, LF, tab, VT, NEL...), format characters (bidi overrides, zero-width space, BOM),
line and paragraph separators, lone surrogates: none belongs in a name, an id, an address or a
reason, and each has broken something downstream (an e-mail header, a log line, a PostgreSQL row)."""

ALLOWED_FORMAT_CHARACTERS = frozenset({"\u200c", "\u200d"})
"""Zero-width non-joiner and joiner: part of how Persian, Indic scripts and emoji are written."""


DOCUMENTED_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E),
    (0x200B, 0x200B), (0x200E, 0x200F), (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F),
    (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)  # fmt: skip
"""The characters of ``REFUSED_CATEGORIES`` (surrogates aside) but the joiners, as of Unicode 15.1
(Python 3.13), which refuses a superset of what older versions do: fixed here so the documents are
the same whichever Python generates them (3.11's Unicode 14 has no U+13439-U+1343F yet)."""


def _class_member(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return chr(code)  # no escape of an astral character reads the same in Python, ECMAScript and Rust


@cache
def text_pattern() -> str:
    """The same rule as a regular expression, for the AsyncAPI and OpenAPI documents: an explicit class
    (no ``\\p{...}``), so Python's ``re``, ECMAScript and Rust's regex read it alike."""
    members = (
        _class_member(low) if low == high else f"{_class_member(low)}-{_class_member(high)}"
        for low, high in DOCUMENTED_RANGES
    )
    return "^[^" + "".join(members) + "]*$"


_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def refused_character(value: str) -> str | None:
    """The first character ``Text`` refuses in ``value``, or None."""
    if value.isascii():
        found = _ASCII_CONTROL.search(value)
        return found.group() if found else None
    for char in value:
        if unicodedata.category(char) in REFUSED_CATEGORIES and char not in ALLOWED_FORMAT_CHARACTERS:
            return char
    return None


def _printable(value: str) -> str:
    char = refused_character(value)
    if char is not None:
        name = unicodedata.name(char, "") or "a control character"
        raise ValueError(
            f"U+{ord(char):04X} ({name}) is not allowed in text: one line of printable characters"
        )
    return value


class _DocumentedRule:
    """Shows the rule in the JSON schema (unless the field has a stricter pattern of its own)."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema: dict[str, Any] = handler(core_schema)
        schema.setdefault("pattern", text_pattern())
        return schema


Text = Annotated[str, AfterValidator(_printable), _DocumentedRule()]
"""Every free-text field of every contract: one line of printable characters.

Refused (the record is a `schema_violation`, dead-lettered with the field named): the characters of
``REFUSED_CATEGORIES``, NUL included, except the zero-width (non-)joiner. Leading and trailing
whitespace is stripped (``Contract``), so a stray trailing line separator disappears rather than
failing. No exception per field: a note or a reason is one line too."""


class Contract(BaseModel):
    """Base for every payload: unknown fields are tolerated (contracts grow), models are immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


class Event(Contract):
    """Fields every event carries. ``event_id`` is how consumers recognise a redelivered event."""

    event_id: UUID = Field(default_factory=uuid4, description="Unique per event; duplicates share it")
    event_type: Text = Field(description="What happened, e.g. `order.status-changed`")
    occurred_at: AwareDatetime = Field(default_factory=utcnow, description="When it happened (UTC)")
    schema_version: int = Field(default=1, ge=1, description="Version of this event's schema")

    def partition_key(self) -> str:
        """The Kafka message key: the aggregate's id, so one aggregate's events stay in order."""
        raise NotImplementedError(f"{type(self).__name__} names no partition key")
