"""Plugin validation rules: loaded and checked at start-up, judged beside the built-in rules, and
unable to stop validation when they break."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import uuid4

import pytest

from libs.contracts.catalog import ProductUpdated
from libs.contracts.envelope import Event
from libs.contracts.lifecycle import (
    OrderEditRequested,
    OrderHeld,
    OrderReceived,
    OrderRejected,
    OrderValidated,
)
from libs.contracts.orders import HoldDecision, OrderDetails, ShipmentLine
from libs.contracts.privacy import ERASED, ErasureApplied, ErasureRequested
from libs.extensions.validation import ValidationRule, validation_rule
from libs.platform.records import Rejected
from libs.platform.timers import Timer
from libs.policy.channels import load_policies
from services.validation.app.plugins import RulesRefused, load_rules
from services.validation.app.use_cases import (
    PRUNE_DAILY_UNITS,
    check_edit,
    decide_hold,
    erase_customer,
    policy_from,
    prune_daily_units,
    update_product,
    validate_orders,
)
from services.validation.domain.rules import Policy
from tests.support import broken_rules
from tests.support.orders import erasure_request, order
from tests.unit.fakes.validation import FakeValidationUnit

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[1] / "plugins/baton-rules-example/src"
POLICY = policy_from(load_policies())
PLACED = "2026-11-28T10:00:00+00:00"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import baton_rules_example  # type: ignore[import-not-found]

    yield baton_rules_example


def received(external_id: str, sku: str = "MUG", quantity: int = 1, **fields: Any) -> OrderReceived:
    details = order(external_id=external_id, lines=[(sku, quantity, "10.00")], customer_id="c1", **fields)
    details["placed_at"] = PLACED
    return OrderReceived(order_id=uuid4(), order=OrderDetails.model_validate(details))


async def shop(*skus: str) -> FakeValidationUnit:
    uow = FakeValidationUnit()
    for sku in skus:
        await update_product(ProductUpdated(sku=sku, name=sku, price=Decimal("10.00"), currency="EUR"), uow)
    uow.validated["webshop:c1"] = 1  # not a first-time customer
    return uow


def only(result: Sequence[Event] | Rejected) -> Event:
    assert not isinstance(result, Rejected), result
    [event] = result
    return event


def outcome(result: Any) -> tuple[str, list[str]]:
    """The event a validated order caused and its reason codes (a Rejected record fails the test)."""
    [event] = result
    codes = [r.code for r in getattr(event, "reasons", [])]
    return type(event).__name__, codes


async def test_a_plugin_rule_rejects_beside_the_built_in_rules_and_every_reason_is_reported(
    example: ModuleType,
) -> None:
    uow = await shop("MUG")
    rules = [example.no_po_box_for_express]
    po_box = {"line1": "PO Box 12"}
    results = await validate_orders(
        [
            received("ok", method="express"),
            received("box", method="express", address=po_box),
            received("box-standard", method="standard", address=po_box),
            received("box-and-ghost", sku="GHOST", method="express", address=po_box),
        ],
        uow,
        POLICY,
        rules,
    )
    assert [outcome(r) for r in results] == [
        ("OrderValidated", []),
        ("OrderRejected", ["po_box_express"]),
        ("OrderValidated", []),
        ("OrderRejected", ["unknown_sku", "po_box_express"]),
    ]


async def test_a_daily_limit_counts_earlier_orders_and_earlier_orders_of_the_same_batch(
    example: ModuleType,
) -> None:
    uow = await shop("LTD-1", "MUG")
    rules = [example.limited_sku_daily_limit]
    first = await validate_orders([received("a", sku="LTD-1", quantity=2)], uow, POLICY, rules)
    assert outcome(first[0]) == ("OrderValidated", [])
    assert uow.units == {("webshop:c1", date(2026, 11, 28), "LTD-1"): 2}
    batch = await validate_orders(
        [
            received("b", sku="LTD-1", quantity=1),  # 3 in all: allowed
            received("c", sku="LTD-1", quantity=1),  # a fourth: refused
            received("d", sku="MUG", quantity=9),  # not limited
        ],
        uow,
        POLICY,
        rules,
    )
    assert [outcome(r) for r in batch] == [
        ("OrderValidated", []),
        ("OrderRejected", ["limited_sku_daily_limit"]),
        ("OrderValidated", []),
    ]
    assert uow.units[("webshop:c1", date(2026, 11, 28), "LTD-1")] == 3, "a rejected order counts for nothing"


async def test_a_rule_that_raises_or_says_an_undeclared_code_holds_the_order_and_stops_nothing() -> None:
    uow = await shop("MUG")
    rules = [broken_rules.explodes_on_boom, broken_rules.says_an_undeclared_code]
    results = await validate_orders(
        [received("boom-1"), received("odd-1"), received("fine"), received("boom-2", sku="GHOST")],
        uow,
        POLICY,
        rules,
    )
    assert [outcome(r) for r in results] == [
        ("OrderHeld", ["rule_error"]),
        ("OrderHeld", ["rule_error"]),
        ("OrderValidated", []),
        ("OrderRejected", ["unknown_sku"]),
    ]
    boom = only(results[0])
    assert isinstance(boom, OrderHeld)
    assert "explodes_on_boom failed (ZeroDivisionError)" in boom.reasons[0].message
    assert "a bug in the plugin" not in boom.reasons[0].message, "never the exception's text"
    odd = only(results[1])
    assert isinstance(odd, OrderHeld) and "undeclared code not_declared" in odd.reasons[0].message
    assert len(uow.held) == 2


def edit_of(placed: OrderReceived, sku: str, quantity: int, **fields: Any) -> OrderEditRequested:
    """The edit intake forwards: the order with one line changed, and the lines it had before."""
    edited = received(placed.order.external_id, sku=sku, quantity=quantity, **fields)
    return OrderEditRequested(
        order_id=placed.order_id,
        request_id=f"ed-{uuid4()}",
        order=edited.order,
        previous_lines=[ShipmentLine(sku=line.sku, quantity=line.quantity) for line in placed.order.lines],
    )


async def test_an_edit_is_judged_by_the_plugin_rules_and_a_daily_limit_leaves_out_its_own_units(
    example: ModuleType,
) -> None:
    uow = await shop("LTD-1", "MUG")
    rules = [example.no_po_box_for_express, example.limited_sku_daily_limit]
    placed = received("a", sku="LTD-1", quantity=2)
    assert outcome((await validate_orders([placed], uow, POLICY, rules))[0]) == ("OrderValidated", [])

    # 2 of the day's 2 units are this order's own: 3 is within the limit, 4 is not.
    assert outcome(await check_edit(edit_of(placed, "LTD-1", 3), uow, POLICY, rules)) == (
        "OrderEditValidated",
        [],
    )
    assert outcome(await check_edit(edit_of(placed, "LTD-1", 4), uow, POLICY, rules)) == (
        "OrderEditRefused",
        ["limited_sku_daily_limit"],
    )
    po_box = edit_of(placed, "LTD-1", 2, method="express", address={"line1": "Postfach 7"})
    assert outcome(await check_edit(po_box, uow, POLICY, rules)) == ("OrderEditRefused", ["po_box_express"])
    assert uow.units == {("webshop:c1", date(2026, 11, 28), "LTD-1"): 2}, "edits count no units"

    # Another order of the day counts: with it, even the unchanged 2 are one too many.
    other = received("b", sku="LTD-1", quantity=1)
    assert outcome((await validate_orders([other], uow, POLICY, rules))[0]) == ("OrderValidated", [])
    assert outcome(await check_edit(edit_of(placed, "LTD-1", 3), uow, POLICY, rules)) == (
        "OrderEditRefused",
        ["limited_sku_daily_limit"],
    )


async def test_an_edit_a_rule_would_hold_or_that_breaks_a_rule_is_refused_not_held() -> None:
    uow = await shop("MUG")
    rules = [broken_rules.explodes_on_boom]
    placed = received("calm")
    assert outcome((await validate_orders([placed], uow, POLICY, rules))[0]) == ("OrderValidated", [])
    edit = edit_of(placed, "MUG", 2)
    boom = edit.model_copy(update={"order": received("boom-3").order})
    assert outcome(await check_edit(boom, uow, POLICY, rules)) == ("OrderEditRefused", ["rule_error"])
    assert outcome(await check_edit(edit, uow, POLICY, rules)) == ("OrderEditValidated", [])
    assert not uow.held, "an edit is never held"


async def test_a_released_hold_counts_its_units_when_a_rule_uses_them(example: ModuleType) -> None:
    uow = await shop("LTD-1")
    uow.validated.clear()  # a first-time customer: held above the (low) threshold
    low = Policy(supported_countries=frozenset({"DE"}), hold_threshold=Decimal("5"))
    rules = [example.limited_sku_daily_limit]
    first = received("big", sku="LTD-1", quantity=2)
    held = only((await validate_orders([first], uow, lambda _: low, rules))[0])
    assert isinstance(held, OrderHeld) and uow.units == {}
    release = HoldDecision(order_id=first.order_id, decision="release", decided_by="ops")
    [released] = await decide_hold(release, uow, count_daily_units=True)
    assert isinstance(released, OrderValidated)
    assert uow.units == {("webshop:c1", date(2026, 11, 28), "LTD-1"): 2}
    again = only(
        (await validate_orders([received("more", sku="LTD-1", quantity=2)], uow, lambda _: low, rules))[0]
    )
    assert isinstance(again, OrderRejected) and again.reasons[0].code == "limited_sku_daily_limit"


async def test_an_erasure_forgets_the_customers_daily_units_and_their_late_order_adds_none(
    example: ModuleType,
) -> None:
    uow = await shop("LTD-1")
    rules = [example.limited_sku_daily_limit]
    day = date(2026, 11, 28)
    await validate_orders([received("a", sku="LTD-1", quantity=3)], uow, POLICY, rules)
    uow.units.update({("marketplace:c1", day, "LTD-1"): 1, ("webshop:c10", day, "LTD-1"): 1})
    request = ErasureRequested.model_validate(erasure_request("c1", requested_at="2026-11-28T12:00:00Z"))

    [report] = await erase_customer(request, uow)

    assert uow.units == {("marketplace:c1", day, "LTD-1"): 1, ("webshop:c10", day, "LTD-1"): 1}
    assert isinstance(report, ErasureApplied) and report.rows_changed == 2, "the history and one units row"
    late = only((await validate_orders([received("late", sku="LTD-1", quantity=3)], uow, POLICY, rules))[0])
    assert isinstance(late, OrderValidated) and late.order.customer.id == ERASED
    assert ("webshop:c1", day, "LTD-1") not in uow.units, "placed before the erasure: counted for nobody"

    everywhere = ErasureRequested.model_validate(
        erasure_request("c1", channel=None, requested_at="2026-11-28T12:00:00Z")
    )
    await erase_customer(everywhere, uow)
    assert uow.units == {("webshop:c10", day, "LTD-1"): 1}


def test_loading_refuses_what_cannot_be_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    loaded = load_rules(
        ["baton_rules_example:no_po_box_for_express", "tests.support.broken_rules:explodes_on_boom"]
    )
    assert [(r.rule.name, r.source) for r in loaded] == [
        ("no_po_box_for_express", "BATON_VALIDATION_RULES"),
        ("explodes_on_boom", "BATON_VALIDATION_RULES"),
    ]
    refusals = {
        "no.such.module:rule": "cannot import no.such.module",
        "tests.support.broken_rules:missing": "has no missing",
        "tests.support.broken_rules": "is not module:attribute",
        "tests.support.broken_rules:not_a_rule": "not declared with @validation_rule",
    }
    for path, message in refusals.items():
        with pytest.raises(RulesRefused, match=message):
            load_rules([path])
    with pytest.raises(RulesRefused, match="named twice: explodes_on_boom"):
        load_rules(["tests.support.broken_rules:explodes_on_boom"] * 2)
    with pytest.raises(RulesRefused, match="names no installed rule: typo"):
        load_rules([], disabled=["typo"])
    assert load_rules(["tests.support.broken_rules:explodes_on_boom"], disabled=["explodes_on_boom"]) == ()


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (set(), "at least one"),
        ({"Bad-Code"}, "not Bad-Code"),
        ({"unknown_sku"}, "are Baton's own"),
        ({"rule_error"}, "are Baton's own"),
    ],
)
def test_a_rule_may_not_declare_bad_or_built_in_codes(
    monkeypatch: pytest.MonkeyPatch, codes: set[str], message: str
) -> None:
    module = ModuleType("bad_codes")
    module.rule = validation_rule(name="bad", codes=codes)(lambda order, context: [])  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "bad_codes", module)
    with pytest.raises(RulesRefused, match=message):
        load_rules(["bad_codes:rule"])


async def test_pruning_forgets_old_days_and_schedules_the_next_round() -> None:
    uow = FakeValidationUnit()
    uow.units = {("c", date(2026, 11, d), "X"): 1 for d in (24, 25, 26, 27, 28)}
    due = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    assert await prune_daily_units(Timer(PRUNE_DAILY_UNITS, "validation", due, {}), uow) == []
    assert sorted(day.day for _, day, _ in uow.units) == [26, 27, 28]
    [(kind, key)] = uow.timers.scheduled
    assert (kind, key) == (PRUNE_DAILY_UNITS, "validation")
    assert uow.timers.scheduled[(kind, key)].due_at == datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


def test_a_rule_is_a_callable_value_with_what_rules_list_shows(example: ModuleType) -> None:
    rule: ValidationRule = example.limited_sku_daily_limit
    assert rule.uses_daily_units and rule.codes == {"limited_sku_daily_limit"}
    assert rule.description == "At most 3 units of a limited SKU (LTD-...) per customer per day."
