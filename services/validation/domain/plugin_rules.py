"""Rules from plugins (``libs.extensions.validation``) beside the built-in ones.

A plugin rule cannot stop validation: one that raises, or returns a code it did not declare, is a
``RuleFailure`` — reported, and the order is held for review (``rule_error``) unless other rules
reject it anyway. Rejections of every rule are reported together; holds only apply to an order no
rule rejects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from libs.extensions.validation import RULE_ERROR, Effect, OrderView, RuleContext, ValidationRule
from services.validation.domain.rules import Finding, Outcome, Verdict


@dataclass(frozen=True)
class RuleFailure:
    rule: str
    error: str
    """The exception's type (never its text: it may quote the order), or the undeclared code."""


@dataclass(frozen=True)
class PluginFindings:
    rejections: tuple[Finding, ...] = ()
    holds: tuple[Finding, ...] = ()
    failures: tuple[RuleFailure, ...] = ()


def apply_rules(rules: Sequence[ValidationRule], order: OrderView, context: RuleContext) -> PluginFindings:
    rejections: list[Finding] = []
    holds: list[Finding] = []
    failures: list[RuleFailure] = []
    for rule in rules:
        try:
            found = [Finding(f.code, f.message, f.sku) for f in rule(order, context)]
        except Exception as exc:  # a plugin's bug must not stop validation of this or any order
            failures.append(RuleFailure(rule.name, type(exc).__name__))
            continue
        undeclared = sorted({f.code for f in found} - rule.codes)
        if undeclared:
            failures.append(RuleFailure(rule.name, f"undeclared code {', '.join(undeclared)}"))
            continue
        (rejections if rule.effect is Effect.REJECT else holds).extend(found)
    return PluginFindings(tuple(rejections), tuple(holds), tuple(failures))


def combine(builtin: Verdict, plugins: PluginFindings) -> Verdict:
    """The verdict with the plugins' findings: any rejection rejects (all reported together);
    otherwise any hold or rule failure holds (a failure as ``rule_error``)."""
    if builtin.outcome is Outcome.REJECTED or plugins.rejections:
        kept = builtin.findings if builtin.outcome is Outcome.REJECTED else ()
        return Verdict(Outcome.REJECTED, kept + plugins.rejections)
    holds = (
        (builtin.findings if builtin.outcome is Outcome.ON_HOLD else ())
        + plugins.holds
        + tuple(
            Finding(RULE_ERROR, f"rule {f.rule} failed ({f.error}); review the order")
            for f in plugins.failures
        )
    )
    return Verdict(Outcome.ON_HOLD, holds) if holds else builtin
