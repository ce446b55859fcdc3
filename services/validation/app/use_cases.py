"""Validation's use cases: keep the catalog, check received orders, apply hold decisions.

Each takes contract objects and a unit of work and returns the facts it caused; it never sees a
topic, a header or a database connection.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, date, timedelta
from decimal import Decimal

from libs.contracts.catalog import ProductUpdated
from libs.contracts.envelope import Event
from libs.contracts.lifecycle import (
    OrderEditRefused,
    OrderEditRequested,
    OrderEditValidated,
    OrderHeld,
    OrderReceived,
    OrderRejected,
    OrderValidated,
)
from libs.contracts.orders import HoldDecision, OrderDetails, Reason
from libs.contracts.privacy import Erasure, ErasureRequested, customers_of, is_erased, kept
from libs.extensions import validation as extension
from libs.platform import metrics
from libs.platform.erasures import Erased, applied
from libs.platform.records import Rejected
from libs.platform.timers import Timer
from libs.policy.channels import ChannelPolicies
from services.validation.app.ports import ValidationUnit
from services.validation.domain import plugin_rules, rules
from services.validation.domain.rules import Outcome, Policy, Verdict

log = logging.getLogger("baton.validation")

PRUNE_DAILY_UNITS = "prune-daily-units"
DAILY_UNITS_KEPT_DAYS = 2


def to_domain(order: OrderDetails) -> rules.Order:
    address = order.shipping_address
    return rules.Order(
        customer_key=customer_key(order),
        currency=order.currency,
        lines=tuple(rules.Line(line.sku, line.quantity, line.unit_price) for line in order.lines),
        address=rules.Address(
            address.name, address.line1, address.city, address.postal_code, address.country
        ),
        payment_status=order.payment.status,
        payment_amount=order.payment.amount,
        customer_email=None if is_erased(order) else order.customer.email,
        shipping_method=str(order.shipping_method),
        pickup_location_id=order.pickup_location_id,
        shipping_price=order.shipping_price or Decimal(0),
    )


def to_view(order: OrderDetails) -> extension.OrderView:
    """The order as plugin rules see it (plain, read-only values)."""
    address = order.shipping_address
    return extension.OrderView(
        channel=order.channel,
        external_id=order.external_id,
        customer_id=order.customer.id,
        customer_key=customer_key(order),
        email=order.customer.email,
        currency=order.currency,
        shipping_method=str(order.shipping_method),
        address=extension.ShippingAddress(
            address.name, address.line1, address.line2, address.city, address.postal_code, address.country
        ),
        lines=tuple(extension.Line(line.sku, line.quantity, line.unit_price) for line in order.lines),
    )


def order_day(order: OrderDetails) -> date:
    """The UTC day an order counts for in daily limits: when it was placed (stable on redelivery)."""
    return order.placed_at.astimezone(UTC).date()


def daily_units_of(order: OrderDetails) -> Counter[tuple[str, date, str]]:
    key, day = customer_key(order), order_day(order)
    return Counter({(key, day, line.sku): line.quantity for line in order.lines})


def customer_key(order: OrderDetails) -> str:
    """Customers are the channel's: the same id on two channels is two customers."""
    return f"{order.channel}:{order.customer.id}"


def reasons(findings: Sequence[rules.Finding]) -> list[Reason]:
    return [Reason(code=f.code, message=f.message, sku=f.sku) for f in findings]


async def update_product(product: ProductUpdated, uow: ValidationUnit) -> list[Event]:
    await uow.catalog.upsert(
        rules.Product(product.sku, product.price, product.currency, product.active), product.name
    )
    return []


async def validate_orders(
    received: Sequence[OrderReceived],
    uow: ValidationUnit,
    policy: Callable[[str], Policy],
    plugins: Sequence[extension.ValidationRule] = (),
) -> list[list[Event] | Rejected]:
    """Check received orders: every failed rule (built-in or plugin) is reported; a first-time
    customer's large order is held, as is one a plugin rule failed on (``rule_error``). The catalog
    and customer histories are read once for all of them and the verdicts decided in order (a
    customer's second order sees the first), holds and histories written once.

    An order placed before an erasure of its customer that arrives after it is checked as it came,
    but held and passed on erased, and counts neither for a history nor for daily units the
    customer asked to lose. One erased upstream (by intake) is checked without its e-mail address
    and counts for nobody either."""
    domain = [to_domain(fact.order) for fact in received]
    erasures = await uow.erasures.covering(customers_of(fact.order for fact in received))
    catalog = await uow.catalog.products(sorted({line.sku for o in domain for line in o.lines}))
    history = await uow.customers.validated_counts(sorted({o.customer_key for o in domain}))
    daily = any(rule.uses_daily_units for rule in plugins)
    units: dict[tuple[str, date], dict[str, int]] = {}
    if daily:
        units = await uow.customers.daily_units(
            sorted({(customer_key(f.order), order_day(f.order)) for f in received})
        )
    holds = []
    newly_validated: Counter[str] = Counter()
    new_units: Counter[tuple[str, date, str]] = Counter()
    results: list[list[Event] | Rejected] = []
    for fact, order in zip(received, domain, strict=True):
        has_history = history.get(order.customer_key, 0) > 0
        ctx = rules.Context(
            catalog=catalog, policy=policy(fact.order.channel), customer_has_history=has_history
        )
        verdict = rules.validate(order, ctx)
        if plugins:
            today = units.setdefault((order.customer_key, order_day(fact.order)), {})
            found = plugin_rules.apply_rules(
                plugins,
                to_view(fact.order),
                extension.RuleContext(customer_has_history=has_history, units_today=dict(today)),
            )
            for failure in found.failures:
                metrics.count(metrics.VALIDATION_RULE_ERRORS, failure.rule)
                log.error(
                    "validation rule failed; the order is held for review",
                    extra={"rule": failure.rule, "error": failure.error, "order_id": str(fact.order_id)},
                )
            verdict = plugin_rules.combine(verdict, found)
        metrics.count(metrics.VALIDATION_DECISIONS, verdict.outcome.value)
        passed_on = kept(fact.order, erasures)
        decided: Event
        if verdict.outcome is Outcome.REJECTED:
            for finding in verdict.findings:
                metrics.count(metrics.REJECTIONS, finding.code)
            decided = OrderRejected(order_id=fact.order_id, reasons=reasons(verdict.findings))
        elif verdict.outcome is Outcome.ON_HOLD:
            holds.append((fact.order_id, passed_on))
            decided = OrderHeld(order_id=fact.order_id, reasons=reasons(verdict.findings))
        else:
            if passed_on is fact.order and not is_erased(fact.order):
                history[order.customer_key] = history.get(order.customer_key, 0) + 1
                newly_validated[order.customer_key] += 1
                if daily:
                    for (key, day, sku), n in daily_units_of(fact.order).items():
                        units[(key, day)][sku] = units[(key, day)].get(sku, 0) + n
                        new_units[(key, day, sku)] += n
            decided = OrderValidated(order_id=fact.order_id, order=passed_on)
        results.append([decided])
    if holds:
        await uow.holds.hold(holds)
    if newly_validated:
        await uow.customers.count_validated(newly_validated)
    if new_units:
        await uow.customers.add_daily_units(new_units)
    return results


async def check_edit(
    fact: OrderEditRequested,
    uow: ValidationUnit,
    policy: Callable[[str], Policy],
    plugins: Sequence[extension.ValidationRule] = (),
) -> list[Event]:
    """The order as the edit would make it passes the same rules as an order does, built-in and
    plugin (every failed one is reported), or the edit is refused and the order stays as it was.

    The customer has an order with us already (this one), so an edit is never held as a first-time
    customer's order. An edit cannot wait for review either: what a plugin rule would hold the order
    for (its hold findings, or ``rule_error`` when the rule fails) refuses the edit instead. Per-day
    limits see the day's units without this order's own (``previous_lines``): they were counted
    when it was validated. Daily units keep counting orders as placed; an accepted edit does not
    change them."""
    order = to_domain(fact.order)
    catalog = await uow.catalog.products(sorted({line.sku for line in order.lines}))
    ctx = rules.Context(catalog=catalog, policy=policy(fact.order.channel), customer_has_history=True)
    verdict = rules.validate(order, ctx)
    refusals = list(verdict.findings) if verdict.outcome is Outcome.REJECTED else []
    if plugins:
        today: dict[str, int] = {}
        if any(rule.uses_daily_units for rule in plugins):
            day = (customer_key(fact.order), order_day(fact.order))
            today = dict((await uow.customers.daily_units([day])).get(day, {}))
            for line in fact.previous_lines or []:
                today[line.sku] = max(0, today.get(line.sku, 0) - line.quantity)
        found = plugin_rules.apply_rules(
            plugins, to_view(fact.order), extension.RuleContext(customer_has_history=True, units_today=today)
        )
        for failure in found.failures:
            metrics.count(metrics.VALIDATION_RULE_ERRORS, failure.rule)
            log.error(
                "validation rule failed; the edit is refused",
                extra={"rule": failure.rule, "error": failure.error, "order_id": str(fact.order_id)},
            )
        combined = plugin_rules.combine(Verdict(Outcome.VALIDATED, ()), found)
        refusals += combined.findings
    if refusals:
        return [
            OrderEditRefused(order_id=fact.order_id, request_id=fact.request_id, reasons=reasons(refusals))
        ]
    return [OrderEditValidated(order_id=fact.order_id, request_id=fact.request_id, order=fact.order)]


async def prune_daily_units(timer: Timer, uow: ValidationUnit) -> list[Event]:
    """Once a day: forget daily units older than ``DAILY_UNITS_KEPT_DAYS`` and set the next round."""
    today = timer.due_at.astimezone(UTC).date()
    await uow.customers.prune_daily_units(today - timedelta(days=DAILY_UNITS_KEPT_DAYS))
    await uow.timers.schedule(Timer(PRUNE_DAILY_UNITS, timer.key, timer.due_at + timedelta(days=1), {}))
    return []


async def decide_hold(
    decision: HoldDecision, uow: ValidationUnit, count_daily_units: bool = False
) -> list[Event]:
    """Release or reject a held order once; a repeated or late decision changes nothing. A released
    order counts for its customer's history (and daily units, when a rule in force uses them)."""
    order = await uow.holds.undecided(decision.order_id)
    if order is None:
        if await uow.holds.known(decision.order_id):
            return []
        raise Rejected("unknown_held_order", f"order {decision.order_id} is not on hold")
    await uow.holds.decide(decision.order_id, decision.decision, decision.decided_by)
    if decision.decision == "reject":
        reason = Reason(
            code="manual_review_rejected",
            message=f"rejected by {decision.decided_by}: {decision.reason}".strip(": "),
        )
        return [OrderRejected(order_id=decision.order_id, reasons=[reason])]
    if not is_erased(order):
        await uow.customers.count_validated(Counter({customer_key(order): 1}))
        if count_daily_units:
            await uow.customers.add_daily_units(daily_units_of(order))
    return [OrderValidated(order_id=decision.order_id, order=order)]


async def erase_customer(request: ErasureRequested, uow: ValidationUnit) -> list[Event]:
    """Forget the customer's history and daily units (their next order is a first-time customer's
    again) and erase their held orders placed before the request, once per request id. Reports
    what it changed."""
    if not await uow.erasures.claim(Erasure.of(request)):
        return []
    forgotten = await uow.customers.forget(request.customer_id, request.channel)
    held = await uow.holds.erase(request)
    erased = Erased(orders=held, rows=held + forgotten)
    await uow.erasures.record(request.request_id, erased)
    return [applied(request, "validation", erased)]


def policy_from(policies: ChannelPolicies) -> Callable[[str], Policy]:
    """Each channel's validation policy (its countries and hold threshold), the defaults for a
    channel the policy file does not name."""
    by_channel = {
        name: Policy(
            supported_countries=p.supported_countries,
            hold_threshold=p.hold_threshold,
            pickup_allowed=p.pickup.allowed,
        )
        for name, p in policies.channels.items()
    }
    default = Policy(
        supported_countries=policies.defaults.supported_countries,
        hold_threshold=policies.defaults.hold_threshold,
        pickup_allowed=policies.defaults.pickup.allowed,
    )
    return lambda channel: by_channel.get(channel, default)
