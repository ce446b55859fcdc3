"""Validation's use cases: keep the catalog, check received orders, apply hold decisions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from uuid import UUID

from libs.contracts.catalog import ProductUpdated
from libs.contracts.lifecycle import OrderHeld, OrderRejected, OrderValidated
from libs.contracts.orders import HoldDecision, OrderDetails, Reason
from libs.platform import metrics
from libs.platform.messaging import Outgoing, Rejected
from services.validation.adapters.store import PgValidationStore
from services.validation.domain import rules
from services.validation.domain.rules import Outcome, Policy


def to_domain(order: OrderDetails) -> rules.Order:
    address = order.shipping_address
    return rules.Order(
        customer_key=f"{order.channel}:{order.customer.id}",
        currency=order.currency,
        lines=tuple(rules.Line(line.sku, line.quantity, line.unit_price) for line in order.lines),
        address=rules.Address(
            address.name, address.line1, address.city, address.postal_code, address.country
        ),
        payment_status=order.payment.status,
        payment_amount=order.payment.amount,
    )


def reasons(findings: tuple[rules.Finding, ...]) -> list[Reason]:
    return [Reason(code=f.code, message=f.message, sku=f.sku) for f in findings]


async def update_product(store: PgValidationStore, product: ProductUpdated) -> list[Outgoing]:
    await store.upsert_product(product.sku, product.name, product.price, product.currency, product.active)
    return []


async def validate_orders(
    store: PgValidationStore,
    received: Sequence[tuple[UUID, OrderDetails] | Rejected],
    policy: Policy,
    lifecycle_topic: str,
) -> list[list[Outgoing] | Rejected]:
    """Check a batch of received orders: the catalog and customer histories are read once, the
    verdicts decided in order in memory (a customer's second order in the batch sees the first),
    holds and history written once. Unparseable items (``Rejected``) pass through."""
    orders = [item for item in received if not isinstance(item, Rejected)]
    domain = {order_id: to_domain(order) for order_id, order in orders}
    catalog = await store.products(sorted({line.sku for o in domain.values() for line in o.lines}))
    history = await store.validated_counts(sorted({o.customer_key for o in domain.values()}))
    holds: list[tuple[UUID, str]] = []
    newly_validated: Counter[str] = Counter()
    results: list[list[Outgoing] | Rejected] = []
    for item in received:
        if isinstance(item, Rejected):
            results.append(item)
            continue
        order_id, order = item
        domain_order = domain[order_id]
        customer = domain_order.customer_key
        ctx = rules.Context(catalog=catalog, policy=policy, customer_has_history=history.get(customer, 0) > 0)
        verdict = rules.validate(domain_order, ctx)
        key = str(order_id)
        metrics.count(metrics.VALIDATION_DECISIONS, verdict.outcome.value)
        if verdict.outcome is Outcome.REJECTED:
            for reason in reasons(verdict.findings):
                metrics.count(metrics.REJECTIONS, reason.code)
            fact: OrderRejected | OrderHeld | OrderValidated = OrderRejected(
                order_id=order_id, reasons=reasons(verdict.findings)
            )
        elif verdict.outcome is Outcome.ON_HOLD:
            holds.append((order_id, order.model_dump_json()))
            fact = OrderHeld(order_id=order_id, reasons=reasons(verdict.findings))
        else:
            history[customer] = history.get(customer, 0) + 1
            newly_validated[customer] += 1
            fact = OrderValidated(order_id=order_id, order=order)
        results.append([Outgoing.event(lifecycle_topic, key, fact)])
    if holds:
        await store.hold_many(holds)
    if newly_validated:
        await store.count_validated_many(newly_validated)
    return results


async def decide_hold(
    store: PgValidationStore, decision: HoldDecision, lifecycle_topic: str
) -> list[Outgoing]:
    """Release or reject a held order once; a repeated or late decision changes nothing."""
    details = await store.undecided_hold(decision.order_id)
    if details is None:
        if await store.is_known_hold(decision.order_id):
            return []
        raise Rejected("unknown_held_order", f"order {decision.order_id} is not on hold")
    await store.decide(decision.order_id, decision.decision, decision.decided_by)
    key = str(decision.order_id)
    if decision.decision == "reject":
        reason = Reason(
            code="manual_review_rejected",
            message=f"rejected by {decision.decided_by}: {decision.reason}".strip(": "),
        )
        return [
            Outgoing.event(lifecycle_topic, key, OrderRejected(order_id=decision.order_id, reasons=[reason]))
        ]
    order = OrderDetails.model_validate_json(details)
    await store.count_validated_many(Counter({f"{order.channel}:{order.customer.id}": 1}))
    return [Outgoing.event(lifecycle_topic, key, OrderValidated(order_id=decision.order_id, order=order))]


def policy_from(supported_countries: str, hold_threshold: str) -> Policy:
    return Policy(
        supported_countries=frozenset(c.strip().upper() for c in supported_countries.split(",") if c.strip()),
        hold_threshold=Decimal(hold_threshold),
    )
