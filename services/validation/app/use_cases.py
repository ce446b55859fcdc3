"""Validation's use cases: keep the catalog, check received orders, apply hold decisions.

Each takes contract objects and a unit of work and returns the facts it caused; it never sees a
topic, a header or a database connection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

from libs.contracts.catalog import ProductUpdated
from libs.contracts.envelope import Event
from libs.contracts.lifecycle import OrderHeld, OrderReceived, OrderRejected, OrderValidated
from libs.contracts.orders import HoldDecision, OrderDetails, Reason
from libs.contracts.privacy import Erasure, ErasureRequested, customers_of, is_erased, kept
from libs.platform import metrics
from libs.platform.erasures import Erased, applied
from libs.platform.records import Rejected
from services.validation.app.ports import ValidationUnit
from services.validation.domain import rules
from services.validation.domain.rules import Outcome, Policy


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
    )


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
    received: Sequence[OrderReceived], uow: ValidationUnit, policy: Policy
) -> list[list[Event] | Rejected]:
    """Check received orders: every failed rule is reported; a first-time customer's large order is
    held. The catalog and customer histories are read once for all of them and the verdicts decided
    in order (a customer's second order sees the first), holds and histories written once.

    An order placed before an erasure of its customer that arrives after it is checked as it came,
    but held and passed on erased, and does not count for a history the customer asked to lose."""
    domain = [to_domain(fact.order) for fact in received]
    erasures = await uow.erasures.covering(customers_of(fact.order for fact in received))
    catalog = await uow.catalog.products(sorted({line.sku for o in domain for line in o.lines}))
    history = await uow.customers.validated_counts(sorted({o.customer_key for o in domain}))
    holds = []
    newly_validated: Counter[str] = Counter()
    results: list[list[Event] | Rejected] = []
    for fact, order in zip(received, domain, strict=True):
        ctx = rules.Context(
            catalog=catalog, policy=policy, customer_has_history=history.get(order.customer_key, 0) > 0
        )
        verdict = rules.validate(order, ctx)
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
            if passed_on is fact.order:
                history[order.customer_key] = history.get(order.customer_key, 0) + 1
                newly_validated[order.customer_key] += 1
            decided = OrderValidated(order_id=fact.order_id, order=passed_on)
        results.append([decided])
    if holds:
        await uow.holds.hold(holds)
    if newly_validated:
        await uow.customers.count_validated(newly_validated)
    return results


async def decide_hold(decision: HoldDecision, uow: ValidationUnit) -> list[Event]:
    """Release or reject a held order once; a repeated or late decision changes nothing."""
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
    return [OrderValidated(order_id=decision.order_id, order=order)]


async def erase_customer(request: ErasureRequested, uow: ValidationUnit) -> list[Event]:
    """Forget the customer's history (their next order is a first-time customer's again) and erase
    their held orders placed before the request, once per request id. Reports what it changed."""
    if not await uow.erasures.claim(Erasure.of(request)):
        return []
    forgotten = await uow.customers.forget(request.customer_id, request.channel)
    held = await uow.holds.erase(request)
    erased = Erased(orders=held, rows=held + forgotten)
    await uow.erasures.record(request.request_id, erased)
    return [applied(request, "validation", erased)]


def policy_from(supported_countries: str, hold_threshold: str) -> Policy:
    return Policy(
        supported_countries=frozenset(c.strip().upper() for c in supported_countries.split(",") if c.strip()),
        hold_threshold=Decimal(hold_threshold),
    )
