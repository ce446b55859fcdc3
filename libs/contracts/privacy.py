"""Personal data in Baton's contracts, and how a customer is erased.

A customer's name, e-mail address and postal address reach Baton in every order (``OrderDetails``:
``customer`` and ``shipping_address``) and travel on to each service that keeps order details. This
module says in one place which fields identify a person (``ERASED_FIELDS``), what erasing an order
leaves (``erase_order``), which orders an erasure request covers (``covers``), and how a record is
shown to people without them (``redact_body``).

``baton privacy erase`` publishes ``ErasureRequested`` on `privacy.erasure-requests.v1`; every
service that keeps personal data applies it once per request id and reports ``ErasureApplied`` on
`privacy.erasures.v1` (``baton privacy status``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, Field

from libs.contracts.envelope import Contract, Event, Text
from libs.contracts.orders import OrderDetails

ERASED = "[erased]"
"""What an erased text field holds."""

ERASED_EMAIL = "erased@erased.invalid"
"""An erased e-mail address: shaped like an address (contracts that check addresses accept it) in
the reserved `.invalid` domain (RFC 6761), which never receives mail."""

ERASED_FIELDS: dict[str, dict[str, str | None]] = {
    "customer": {"id": ERASED, "email": ERASED_EMAIL, "name": ERASED},
    "shipping_address": {
        "name": ERASED,
        "line1": ERASED,
        "line2": None,
        "city": ERASED,
        "postal_code": ERASED,
        "lat": None,
        "lon": None,
    },
}
"""The personal fields of ``OrderDetails`` and what erasure puts in their place, per group, as a JSON
merge patch: the same patch erases a model (``erase_order``) and a stored JSON column (in SQL).

Everything else is kept, because operations, accounting and the status API need it and it names or
locates nobody on its own: the order's ids (order id, channel, external id), when it was placed,
the destination **country** (validation's and sourcing's rules), shipping method, currency, lines
(sku, quantity, price) and payment (status, the provider's reference, amount). The customer id
goes too: a kept pseudonym would still tie the orders to one person."""

MASK = "***"
"""What ``redact_body`` shows instead of a personal value."""

PERSONAL_KEYS = frozenset({"customer_id"})
"""Fields outside ``ERASED_FIELDS``' groups that name a customer (an erasure request's)."""

_EMAIL_LIKE = re.compile(r"[^\s@\"<>]+@[^\s@\"<>]+\.[^\s@\"<>]+")


class ErasureRequested(Contract):
    """On `privacy.erasure-requests.v1` (key = request id), from operators (`baton privacy erase`):
    erase one customer's personal data from every service that keeps it. Idempotent per ``request_id``.

    The customer is the channel's customer id, as orders carry it in ``customer.id``: the identity
    the channel's own erasure process starts from, the same after the customer changed e-mail
    address, and not itself an address to put on a topic. Orders placed before ``requested_at``
    are erased wherever they are, also those still on their way to a service; orders placed later
    are new and kept.
    """

    request_id: Text = Field(
        min_length=1, max_length=200, description="Idempotency key; repeats change nothing"
    )
    customer_id: Text = Field(
        min_length=1, max_length=200, description="The channel's customer id (`customer.id`)"
    )
    channel: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Only this channel's customer; omitted: this customer id on every channel",
    )
    requested_at: AwareDatetime = Field(
        description="Orders placed before this are erased; later ones are kept"
    )


class ErasureApplied(Event):
    """On `privacy.erasures.v1` (key = request id): one service applied an erasure request.

    Sent once per service and request, however often the request is repeated."""

    event_type: Literal["privacy.erasure-applied"] = "privacy.erasure-applied"
    request_id: Text
    service: Text = Field(description="The service that applied it")
    orders: int = Field(ge=0, description="Orders whose personal data this service erased")
    rows_changed: int = Field(ge=0, description="Rows it changed or deleted, in every table")

    def partition_key(self) -> str:
        return self.request_id


def customer_digest(customer_id: str) -> str:
    """How a service remembers an erased customer: it recognises the id again, but does not keep it."""
    return hashlib.sha256(f"baton-customer:{customer_id}".encode()).hexdigest()


@dataclass(frozen=True)
class Erasure:
    """An erasure request as a service keeps it once applied: it also covers orders arriving later."""

    request_id: str
    channel: str | None
    customer_digest: str
    requested_at: datetime

    @classmethod
    def of(cls, request: ErasureRequested) -> Erasure:
        return cls(
            request.request_id, request.channel, customer_digest(request.customer_id), request.requested_at
        )


def covers(erasure: Erasure, order: OrderDetails) -> bool:
    """The request is about this order: its customer, on its channel (or any), placed before it."""
    return (
        erasure.channel in (None, order.channel)
        and order.placed_at < erasure.requested_at
        and customer_digest(order.customer.id) == erasure.customer_digest
    )


def erase_order(order: OrderDetails) -> OrderDetails:
    """The order without the person: ``ERASED_FIELDS`` replaced, everything else as it was."""
    return order.model_copy(
        update={
            group: getattr(order, group).model_copy(update=patch) for group, patch in ERASED_FIELDS.items()
        }
    )


def is_erased(order: OrderDetails) -> bool:
    return order.customer.id == ERASED


def kept(order: OrderDetails, erasures: Iterable[Erasure]) -> OrderDetails:
    """The order as a service may keep and pass on: erased when an erasure applied here covers it
    (an order placed before the request that reaches the service only after it), else the very
    same object (``kept(o, e) is o`` tells that nothing covers it)."""
    return erase_order(order) if any(covers(e, order) for e in erasures) else order


def customers_of(orders: Iterable[OrderDetails]) -> list[str]:
    """The distinct customer ids of these orders, for looking up the erasures that may cover them."""
    return sorted({o.customer.id for o in orders})


def redact_json(value: Any) -> Any:
    """A copy of decoded JSON with every personal value masked, wherever an order sits in it (at
    the top, under `order`, ...): the fields of ``ERASED_FIELDS``' groups, ``PERSONAL_KEYS``, and
    any string that looks like an e-mail address."""
    if isinstance(value, list):
        return [redact_json(item) for item in value]
    if isinstance(value, str):
        return MASK if _EMAIL_LIKE.search(value) else value
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        personal = ERASED_FIELDS.get(key)
        if personal is not None and isinstance(item, dict):
            out[key] = {
                k: MASK if k in personal and v is not None else redact_json(v) for k, v in item.items()
            }
        elif key in PERSONAL_KEYS and item is not None:
            out[key] = MASK
        else:
            out[key] = redact_json(item)
    return out


def redact_body(value: bytes) -> str:
    """A record's body for people to read (`baton dlq list`): JSON with personal values masked;
    a body that is not JSON is withheld, as nothing says where personal data sits in it."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return f"<{len(value)} bytes, not JSON: withheld>"
    return orjson.dumps(redact_json(decoded)).decode()


def personal_values(value: bytes) -> set[str]:
    """The personal values in a record's JSON body (none for a body that is not JSON)."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return set()
    found: set[str] = set()

    def walk(node: Any, personal: Sequence[str] | frozenset[str] = frozenset()) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key, item in node.items():
                scalar = isinstance(item, str | int | float) and not isinstance(item, bool)
                if scalar and (key in personal or key in PERSONAL_KEYS):
                    found.add(str(item))
                walk(item, tuple(ERASED_FIELDS.get(key, ())) if isinstance(item, dict) else ())
        elif isinstance(node, str):
            found.update(_EMAIL_LIKE.findall(node))

    walk(decoded)
    return {v for v in found if len(v) >= 3}


def redact_text(text: str, value: bytes) -> str:
    """Text about a record (the error a service gave up with) with the record's personal values and
    anything that looks like an e-mail address masked: exception messages may quote what they read."""
    for personal in sorted(personal_values(value), key=len, reverse=True):
        text = text.replace(personal, MASK)
    return _EMAIL_LIKE.sub(MASK, text)


def carries_personal_data(contract: type[BaseModel]) -> bool:
    """Whether records of this contract hold personal data (a customer, an address, a customer id):
    dead letters of an input that carries them are kept no longer than the data itself."""
    schema = contract.model_json_schema()
    return bool({"Customer", "Address"} & schema.get("$defs", {}).keys()) or bool(
        PERSONAL_KEYS & schema.get("properties", {}).keys()
    )
