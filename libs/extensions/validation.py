"""Validation rules of your own, without forking Baton.

A rule is a function from an order (``OrderView``) and what validation knows (``RuleContext``) to
its findings, declared with ``@validation_rule``::

    from libs.extensions.validation import Finding, OrderView, RuleContext, validation_rule

    @validation_rule(name="no_po_box_for_express", codes={"po_box_express"})
    def no_po_box_for_express(order: OrderView, context: RuleContext) -> list[Finding]:
        if order.shipping_method == "express" and "po box" in order.address.line1.lower():
            return [Finding("po_box_express", "express parcels cannot go to a PO box")]
        return []

Register it through the ``baton.validation_rules`` entry point group of your package
(``[project.entry-points."baton.validation_rules"] no_po_box_for_express =
"my_rules:no_po_box_for_express"``) or list it in ``BATON_VALIDATION_RULES``
(``my_rules:no_po_box_for_express``). ``baton rules list`` shows the rules in force.

A ``reject`` rule's findings reject the order (with every other failed rule's); a ``hold`` rule's
hold an otherwise valid order for a person (``orders.hold-decisions.v1``). A rule must be pure and
quick: no I/O (what it may know is in ``RuleContext``). A rule that raises, or returns a code it did
not declare, rejects nothing and dead-letters nothing: the order is held for review with reason
``rule_error`` and the failure is logged and counted (``baton_validation_rule_errors``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

RULE_ERROR = "rule_error"
"""The hold reason of an order a rule failed on."""


class Effect(StrEnum):
    REJECT = "reject"
    HOLD = "hold"


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class ShippingAddress:
    name: str
    line1: str
    line2: str | None
    city: str
    postal_code: str
    country: str


@dataclass(frozen=True)
class OrderView:
    """The order as the channel placed it (read-only)."""

    channel: str
    external_id: str
    customer_id: str
    customer_key: str
    """``<channel>:<customer id>``: customers are the channel's."""
    email: str
    currency: str
    shipping_method: str
    address: ShippingAddress
    lines: tuple[Line, ...]

    @property
    def total(self) -> Decimal:
        return sum((line.unit_price * line.quantity for line in self.lines), Decimal(0))


@dataclass(frozen=True)
class RuleContext:
    """What validation knows besides the order."""

    customer_has_history: bool
    """Whether an earlier order of this customer was validated."""
    units_today: Mapping[str, int] = field(default_factory=dict)
    """Units per sku of this customer's orders validated today (UTC), before this one — filled only
    for rules declared with ``uses_daily_units=True`` (counting starts when such a rule is in force)."""


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    sku: str | None = None


Check = Callable[[OrderView, RuleContext], Iterable[Finding]]


@dataclass(frozen=True)
class ValidationRule:
    """A rule with what ``baton rules list`` shows about it."""

    name: str
    codes: frozenset[str]
    check: Check
    effect: Effect = Effect.REJECT
    description: str = ""
    uses_daily_units: bool = False

    def __call__(self, order: OrderView, context: RuleContext) -> Iterable[Finding]:
        return self.check(order, context)


def validation_rule(
    *,
    name: str,
    codes: Iterable[str],
    effect: Effect | str = Effect.REJECT,
    uses_daily_units: bool = False,
) -> Callable[[Check], ValidationRule]:
    """Declare a rule: its name, the reason codes its findings may carry, reject or hold."""

    def declare(check: Check) -> ValidationRule:
        return ValidationRule(
            name=name,
            codes=frozenset(codes),
            check=check,
            effect=Effect(effect),
            description=(check.__doc__ or "").strip().splitlines()[0] if check.__doc__ else "",
            uses_daily_units=uses_daily_units,
        )

    return declare
