"""The plugin rules in force: those of installed packages (entry point group
``baton.validation_rules``) and those named in ``BATON_VALIDATION_RULES``, minus the disabled.

Everything is checked at start-up, so a typo or a broken plugin stops the service with one line
(``RulesRefused``) rather than letting orders through unchecked.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points

from libs.extensions.validation import RULE_ERROR, ValidationRule
from libs.policy import ConfigurationRefused
from services.validation.domain.rules import HOLD_RULES, RULES

ENTRY_POINT_GROUP = "baton.validation_rules"
CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
BUILT_IN_CODES = frozenset(rule.__name__ for rule in (*RULES, *HOLD_RULES))
"""A built-in rule's name is its reason code."""


class RulesRefused(ConfigurationRefused):
    """A plugin rule that cannot be used."""


@dataclass(frozen=True)
class LoadedRule:
    rule: ValidationRule
    source: str
    """Where it came from: ``<distribution> <version> (entry point)`` or ``BATON_VALIDATION_RULES``."""


def _load_path(path: str) -> object:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise RulesRefused(f"BATON_VALIDATION_RULES: {path!r} is not module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise RulesRefused(
            f"BATON_VALIDATION_RULES: cannot import {module_name} ({type(exc).__name__}: {exc})"
        ) from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise RulesRefused(f"BATON_VALIDATION_RULES: {module_name} has no {attribute}") from None


def load_rules(paths: Sequence[str] = (), disabled: Sequence[str] = ()) -> tuple[LoadedRule, ...]:
    found: list[LoadedRule] = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        where = f"{point.dist.name} {point.dist.version} (entry point)" if point.dist else "entry point"
        try:
            loaded = point.load()
        except Exception as exc:
            raise RulesRefused(
                f"validation rule {point.name} from {where}: cannot load {point.value} ({type(exc).__name__}: {exc})"
            ) from None
        found.append(_checked(loaded, f"{point.name} from {where}", where))
    for path in paths:
        found.append(_checked(_load_path(path), path, "BATON_VALIDATION_RULES"))
    names = [r.rule.name for r in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RulesRefused(f"validation rules named twice: {', '.join(twice)} (names must be unique)")
    unknown = sorted(set(disabled) - set(names))
    if unknown:
        raise RulesRefused(f"BATON_VALIDATION_RULES_DISABLED names no installed rule: {', '.join(unknown)}")
    codes: dict[str, str] = {}
    for loaded in found:
        for code in loaded.rule.codes:
            if code in codes:
                raise RulesRefused(
                    f"reason code {code} is declared by both {codes[code]} and {loaded.rule.name}"
                )
            codes[code] = loaded.rule.name
    return tuple(r for r in found if r.rule.name not in set(disabled))


def _checked(candidate: object, what: str, source: str) -> LoadedRule:
    if not isinstance(candidate, ValidationRule):
        raise RulesRefused(
            f"validation rule {what}: not declared with @validation_rule (libs.extensions.validation)"
        )
    bad = sorted(c for c in candidate.codes if not CODE.match(c))
    if not candidate.codes or bad:
        raise RulesRefused(
            f"validation rule {candidate.name}: reason codes must be lower_snake_case and at least one"
            + (f" (not {', '.join(bad)})" if bad else "")
        )
    taken = sorted(candidate.codes & (BUILT_IN_CODES | {RULE_ERROR}))
    if taken:
        raise RulesRefused(
            f"validation rule {candidate.name}: reason codes {', '.join(taken)} are Baton's own"
        )
    return LoadedRule(candidate, source)
