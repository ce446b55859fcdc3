"""Validation rules: each is a plain function from an order and what we know to its findings.

A finding is a rejection (the order cannot proceed) or a hold (a person must look at it).
Adding a rule means writing one function and listing it in ``RULES`` or ``HOLD_RULES``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from libs.contracts.email import email_problem

MAX_QUANTITY_PER_LINE = 10_000
AUTHORIZED_PAYMENT_STATUSES = frozenset({"authorized", "captured"})
PENDING_PAYMENT = "pending"
"""A payment still to be authorized: the order goes on, its stock reserved until the channel's
deadline (allocation releases it and cancels the order with `payment_timeout` if nothing comes)."""
COUNTRY_CODE = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class Address:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str


@dataclass(frozen=True)
class Order:
    customer_key: str
    currency: str
    lines: tuple[Line, ...]
    address: Address
    payment_status: str
    payment_amount: Decimal
    customer_email: str | None
    """None for an order whose customer was erased: there is no address left to check, and none is
    ever written to."""
    shipping_method: str = "standard"
    pickup_location_id: str | None = None
    shipping_price: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        """What the goods cost (the hold threshold is about this)."""
        return sum((line.unit_price * line.quantity for line in self.lines), Decimal(0))

    @property
    def amount_due(self) -> Decimal:
        """What the customer pays: the goods and the shipping price."""
        return self.total + self.shipping_price


@dataclass(frozen=True)
class Product:
    sku: str
    price: Decimal
    currency: str
    active: bool


@dataclass(frozen=True)
class Policy:
    supported_countries: frozenset[str]
    hold_threshold: Decimal
    pickup_allowed: bool = False


@dataclass(frozen=True)
class Context:
    """What validation knows besides the order: the catalog, the policy and the customer's history."""

    catalog: Mapping[str, Product]
    policy: Policy
    customer_has_history: bool = False


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    sku: str | None = None


Rule = Callable[[Order, Context], list[Finding]]


def unknown_sku(order: Order, ctx: Context) -> list[Finding]:
    return [
        Finding("unknown_sku", f"{line.sku} is not in the catalog", line.sku)
        for line in order.lines
        if line.sku not in ctx.catalog
    ]


def inactive_sku(order: Order, ctx: Context) -> list[Finding]:
    return [
        Finding("inactive_sku", f"{line.sku} is no longer sold", line.sku)
        for line in order.lines
        if line.sku in ctx.catalog and not ctx.catalog[line.sku].active
    ]


def price_mismatch(order: Order, ctx: Context) -> list[Finding]:
    """The customer must have been shown the catalog price, to the cent."""
    return [
        Finding(
            "price_mismatch",
            f"{line.sku} costs {ctx.catalog[line.sku].price}, order says {line.unit_price}",
            line.sku,
        )
        for line in order.lines
        if line.sku in ctx.catalog and ctx.catalog[line.sku].price != line.unit_price
    ]


def currency_mismatch(order: Order, ctx: Context) -> list[Finding]:
    return [
        Finding(
            "currency_mismatch",
            f"{line.sku} is sold in {ctx.catalog[line.sku].currency}, not {order.currency}",
            line.sku,
        )
        for line in order.lines
        if line.sku in ctx.catalog and ctx.catalog[line.sku].currency != order.currency
    ]


def invalid_quantity(order: Order, ctx: Context) -> list[Finding]:
    return [
        Finding(
            "invalid_quantity",
            f"quantity {line.quantity} is not between 1 and {MAX_QUANTITY_PER_LINE}",
            line.sku,
        )
        for line in order.lines
        if not 1 <= line.quantity <= MAX_QUANTITY_PER_LINE
    ]


def invalid_address(order: Order, ctx: Context) -> list[Finding]:
    address = order.address
    missing = [
        name for name in ("name", "line1", "city", "postal_code") if not getattr(address, name).strip()
    ]
    problems = [f"{name} is empty" for name in missing]
    if not COUNTRY_CODE.match(address.country):
        problems.append(f"country {address.country!r} is not an ISO-3166 alpha-2 code")
    return [Finding("invalid_address", "; ".join(problems))] if problems else []


def invalid_email(order: Order, ctx: Context) -> list[Finding]:
    """The customer's e-mail must be exactly one address: a list of addresses or a display name would
    put other recipients (or other text) into the customer's messages."""
    if order.customer_email is not None and (problem := email_problem(order.customer_email)):
        return [Finding("invalid_email", f"the customer's e-mail is not one valid address: {problem}")]
    return []


def unsupported_country(order: Order, ctx: Context) -> list[Finding]:
    country = order.address.country
    if COUNTRY_CODE.match(country) and country not in ctx.policy.supported_countries:
        return [Finding("unsupported_country", f"we do not ship to {country}")]
    return []


def payment_not_authorized(order: Order, ctx: Context) -> list[Finding]:
    if order.payment_status not in AUTHORIZED_PAYMENT_STATUSES | {PENDING_PAYMENT}:
        return [Finding("payment_not_authorized", f"payment is {order.payment_status!r}")]
    return []


def payment_amount_mismatch(order: Order, ctx: Context) -> list[Finding]:
    if order.payment_amount != order.amount_due:
        return [
            Finding(
                "payment_amount_mismatch", f"paid {order.payment_amount}, order totals {order.amount_due}"
            )
        ]
    return []


def manual_review(order: Order, ctx: Context) -> list[Finding]:
    """A first-time customer's large order waits for a person."""
    if not ctx.customer_has_history and order.total > ctx.policy.hold_threshold:
        return [
            Finding(
                "manual_review",
                f"first order of this customer totals {order.total} > {ctx.policy.hold_threshold}",
            )
        ]
    return []


def pickup_not_possible(order: Order, ctx: Context) -> list[Finding]:
    """Click-and-collect only where the channel offers it, and only at a named store."""
    if order.shipping_method != "pickup":
        return []
    if not ctx.policy.pickup_allowed:
        return [Finding("pickup_not_offered", "this channel does not offer pickup")]
    if not order.pickup_location_id:
        return [Finding("pickup_location_missing", "a pickup order names its pickup_location_id")]
    return []


RULES: tuple[Rule, ...] = (
    unknown_sku,
    inactive_sku,
    price_mismatch,
    currency_mismatch,
    invalid_quantity,
    invalid_address,
    invalid_email,
    unsupported_country,
    payment_not_authorized,
    payment_amount_mismatch,
    pickup_not_possible,
)
HOLD_RULES: tuple[Rule, ...] = (manual_review,)


class Outcome(Enum):
    VALIDATED = "validated"
    REJECTED = "rejected"
    ON_HOLD = "on_hold"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    findings: tuple[Finding, ...] = field(default=())


def validate(
    order: Order, ctx: Context, rules: tuple[Rule, ...] = RULES, hold_rules: tuple[Rule, ...] = HOLD_RULES
) -> Verdict:
    """Every failed rule is reported, not just the first; holds apply only to otherwise valid orders."""
    rejections = tuple(finding for rule in rules for finding in rule(order, ctx))
    if rejections:
        return Verdict(Outcome.REJECTED, rejections)
    holds = tuple(finding for rule in hold_rules for finding in rule(order, ctx))
    if holds:
        return Verdict(Outcome.ON_HOLD, holds)
    return Verdict(Outcome.VALIDATED)
