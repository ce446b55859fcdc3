"""Plugin rules with bugs, for the tests that show a broken rule cannot stop validation."""

from __future__ import annotations

from libs.extensions.validation import Finding, OrderView, RuleContext, validation_rule


@validation_rule(name="explodes_on_boom", codes={"boom"})
def explodes_on_boom(order: OrderView, context: RuleContext) -> list[Finding]:
    """Raises for orders whose external id starts with "boom" (a plugin's bug)."""
    if order.external_id.startswith("boom"):
        raise ZeroDivisionError("a bug in the plugin")
    return []


@validation_rule(name="says_an_undeclared_code", codes={"declared"}, effect="hold")
def says_an_undeclared_code(order: OrderView, context: RuleContext) -> list[Finding]:
    """Returns a code it did not declare for orders whose external id starts with "odd"."""
    if order.external_id.startswith("odd"):
        return [Finding("not_declared", "surprise")]
    return []


def not_a_rule(order: OrderView, context: RuleContext) -> list[Finding]:
    return []
