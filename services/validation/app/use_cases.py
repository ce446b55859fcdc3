"""Validation's use cases: keep the catalog, check received orders, apply hold decisions."""

from __future__ import annotations

from decimal import Decimal

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


async def validate_order(
    store: PgValidationStore, order_id: object, order: OrderDetails, policy: Policy, lifecycle_topic: str
) -> list[Outgoing]:
    domain_order = to_domain(order)
    ctx = rules.Context(
        catalog=await store.products(sorted({line.sku for line in domain_order.lines})),
        policy=policy,
        customer_has_history=await store.customer_has_history(domain_order.customer_key),
    )
    verdict = rules.validate(domain_order, ctx)
    key = str(order_id)
    metrics.count(metrics.VALIDATION_DECISIONS, verdict.outcome.value)
    if verdict.outcome is Outcome.REJECTED:
        for reason in reasons(verdict.findings):
            metrics.count(metrics.REJECTIONS, reason.code)
    if verdict.outcome is Outcome.REJECTED:
        return [
            Outgoing.event(
                lifecycle_topic, key, OrderRejected(order_id=order_id, reasons=reasons(verdict.findings))
            )
        ]
    if verdict.outcome is Outcome.ON_HOLD:
        await store.hold(order_id, order.model_dump_json())  # type: ignore[arg-type]
        return [
            Outgoing.event(
                lifecycle_topic, key, OrderHeld(order_id=order_id, reasons=reasons(verdict.findings))
            )
        ]
    await store.count_validated(domain_order.customer_key)
    return [Outgoing.event(lifecycle_topic, key, OrderValidated(order_id=order_id, order=order))]


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
    await store.count_validated(f"{order.channel}:{order.customer.id}")
    return [Outgoing.event(lifecycle_topic, key, OrderValidated(order_id=decision.order_id, order=order))]


def policy_from(supported_countries: str, hold_threshold: str) -> Policy:
    return Policy(
        supported_countries=frozenset(c.strip().upper() for c in supported_countries.split(",") if c.strip()),
        hold_threshold=Decimal(hold_threshold),
    )
