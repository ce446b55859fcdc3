"""Validation's use cases on in-memory ports: what each input causes, without Kafka or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from libs.contracts.catalog import ProductUpdated
from libs.contracts.envelope import Event
from libs.contracts.lifecycle import OrderHeld, OrderReceived, OrderRejected, OrderValidated
from libs.contracts.orders import HoldDecision, OrderDetails
from libs.contracts.privacy import ERASED, ERASED_EMAIL, ErasureApplied, ErasureRequested, erase_order
from libs.platform.messaging import Rejected
from libs.policy.channels import parse_policies
from services.validation.app.use_cases import (
    decide_hold,
    erase_customer,
    policy_from,
    update_product,
    validate_orders,
)
from tests.support.orders import erasure_request, order
from tests.unit.fakes.validation import FakeValidationUnit

pytestmark = pytest.mark.unit

POLICY = policy_from(
    parse_policies(
        {
            "version": 1,
            "defaults": {"supported_countries": ["DE", "AT"], "hold_threshold": "1000"},
            "channels": {"b2b": {"hold_threshold": "50000"}, "local": {"supported_countries": ["AT"]}},
        },
        "test",
    )
)


def received(
    customer: str = "c1",
    price: str = "10.00",
    quantity: int = 1,
    sku: str = "MUG",
    placed_at: str | None = None,
    channel: str = "webshop",
) -> OrderReceived:
    details = order(lines=[(sku, quantity, price)], customer_id=customer, channel=channel)
    if placed_at is not None:
        details["placed_at"] = placed_at
    return OrderReceived(order_id=uuid4(), order=OrderDetails.model_validate(details))


def erasure(customer: str = "c1", **fields: Any) -> ErasureRequested:
    return ErasureRequested.model_validate(erasure_request(customer, **fields))


def applied(results: Sequence[Sequence[Event] | Rejected]) -> list[Sequence[Event]]:
    """The events of each item, asserting that none was rejected."""
    assert not any(isinstance(r, Rejected) for r in results), results
    return [r for r in results if not isinstance(r, Rejected)]


async def with_mug(price: str = "10.00") -> FakeValidationUnit:
    uow = FakeValidationUnit()
    await update_product(ProductUpdated(sku="MUG", name="Mug", price=Decimal(price), currency="EUR"), uow)
    return uow


async def test_a_valid_order_is_validated_and_counts_for_its_customer() -> None:
    uow = await with_mug()
    fact = received()
    [[event]] = applied(await validate_orders([fact], uow, POLICY))
    assert isinstance(event, OrderValidated) and event.order_id == fact.order_id
    assert uow.validated == {"webshop:c1": 1}


async def test_an_order_breaking_rules_is_rejected_with_every_reason() -> None:
    uow = await with_mug()
    [[cheap], [ghost]] = applied(
        await validate_orders([received(price="9.99"), received(sku="GHOST")], uow, POLICY)
    )
    assert isinstance(cheap, OrderRejected) and isinstance(ghost, OrderRejected)
    assert [r.code for r in cheap.reasons] == ["price_mismatch"]
    assert [(r.code, r.sku) for r in ghost.reasons] == [("unknown_sku", "GHOST")]
    assert uow.validated == {}


async def test_an_order_whose_email_is_a_list_of_addresses_is_rejected_with_a_reason_not_dead_lettered() -> (
    None
):
    uow = await with_mug()
    payload = order(lines=[("MUG", 1, "10.00")])
    payload["customer"]["email"] = "victim@example.com, list@evil.example, more@evil.example"
    fact = OrderReceived(order_id=uuid4(), order=OrderDetails.model_validate(payload))
    [[event]] = applied(await validate_orders([fact, received()], uow, POLICY))[:1]
    assert isinstance(event, OrderRejected)
    assert [r.code for r in event.reasons] == ["invalid_email"]


async def test_a_customers_second_order_in_the_same_batch_is_not_a_first_order() -> None:
    uow = await with_mug("1500.00")
    first, second = received(price="1500.00"), received(price="1500.00")
    results = await validate_orders([first, second], uow, POLICY)
    assert [type(r[0]) for r in applied(results)] == [OrderHeld, OrderHeld]
    assert set(uow.held) == {first.order_id, second.order_id}
    small = await with_mug()
    a, b = received(customer="c2"), received(customer="c2")
    await validate_orders([a], small, POLICY)
    assert small.validated == {"webshop:c2": 1}
    await validate_orders([b], small, POLICY)
    assert small.validated == {"webshop:c2": 2}


async def test_a_held_order_is_released_once_and_a_late_or_unknown_decision_changes_nothing() -> None:
    uow = await with_mug("1500.00")
    fact = received(price="1500.00")
    [[held]] = applied(await validate_orders([fact], uow, POLICY))
    assert isinstance(held, OrderHeld)
    release = HoldDecision(order_id=fact.order_id, decision="release", decided_by="ops")
    [released] = await decide_hold(release, uow)
    assert isinstance(released, OrderValidated) and released.order == fact.order
    assert await decide_hold(release, uow) == []
    assert uow.validated == {"webshop:c1": 1}
    with pytest.raises(Rejected) as unknown:
        await decide_hold(HoldDecision(order_id=uuid4(), decision="release", decided_by="ops"), uow)
    assert unknown.value.cause == "unknown_held_order"


async def test_a_rejected_hold_names_who_rejected_it() -> None:
    uow = await with_mug("1500.00")
    fact = received(price="1500.00")
    await validate_orders([fact], uow, POLICY)
    [rejected] = await decide_hold(
        HoldDecision(order_id=fact.order_id, decision="reject", decided_by="ops", reason="fraud"), uow
    )
    assert isinstance(rejected, OrderRejected)
    assert [(r.code, r.message) for r in rejected.reasons] == [
        ("manual_review_rejected", "rejected by ops: fraud")
    ]
    assert uow.validated == {}


async def test_an_erasure_forgets_the_customers_history_and_erases_their_held_orders_once() -> None:
    uow = await with_mug("1500.00")
    held, decided, other = received(price="1500.00"), received(price="1500.00"), received("c2", "1500.00")
    await validate_orders([held, decided, other], uow, POLICY)
    await decide_hold(HoldDecision(order_id=decided.order_id, decision="reject", decided_by="ops"), uow)
    uow.validated["webshop:c1"] = 3

    [report] = await erase_customer(erasure(request_id="er-1"), uow)

    assert isinstance(report, ErasureApplied)
    assert (report.service, report.orders, report.rows_changed) == ("validation", 2, 3)
    assert "webshop:c1" not in uow.validated
    for order_id in (held.order_id, decided.order_id):
        kept = uow.held[order_id]
        assert (kept.customer.email, kept.shipping_address.line1) == (ERASED_EMAIL, ERASED)
        assert kept.lines == held.order.lines
    assert uow.held[other.order_id] == other.order
    assert await erase_customer(erasure(request_id="er-1"), uow) == []


async def test_after_an_erasure_the_customers_next_order_is_a_first_time_customers_again() -> None:
    uow = await with_mug("1500.00")
    uow.validated["webshop:c1"] = 5
    await erase_customer(erasure(), uow)

    [[verdict]] = applied(
        await validate_orders([received(price="1500.00", placed_at="2026-11-28T09:00:00Z")], uow, POLICY)
    )

    assert isinstance(verdict, OrderHeld)


async def test_an_order_placed_before_an_erasure_that_arrives_after_it_is_checked_as_sent_but_passed_on_erased() -> (
    None
):
    uow = await with_mug()
    await erase_customer(erasure(), uow)
    late, bad = received(), received(sku="GHOST")

    [[validated], [rejected]] = applied(await validate_orders([late, bad], uow, POLICY))

    assert isinstance(validated, OrderValidated) and validated.order.customer.id == ERASED
    assert validated.order.lines == late.order.lines
    assert isinstance(rejected, OrderRejected), "the rules saw the order as it came"
    assert uow.validated == {}, "an erased customer's history is not started again"


async def test_an_order_erased_upstream_is_validated_without_its_address_and_counts_for_nobody() -> None:
    uow = await with_mug()
    erased = [OrderReceived(order_id=uuid4(), order=erase_order(received().order)) for _ in range(2)]

    verdicts = applied(await validate_orders(erased, uow, POLICY))

    assert [type(v) for [v] in verdicts] == [OrderValidated, OrderValidated], "not invalid_email"
    assert uow.validated == {}, "erased orders share no history"


async def test_a_held_order_released_after_its_customer_was_erased_goes_on_erased_and_counts_for_nobody() -> (
    None
):
    uow = await with_mug("1500.00")
    fact = received(price="1500.00")
    await validate_orders([fact], uow, POLICY)
    await erase_customer(erasure(), uow)

    [released] = await decide_hold(
        HoldDecision(order_id=fact.order_id, decision="release", decided_by="ops"), uow
    )

    assert isinstance(released, OrderValidated) and released.order.customer.email == ERASED_EMAIL
    assert uow.validated == {}


async def test_an_erasure_without_a_channel_forgets_the_customer_on_every_channel() -> None:
    uow = await with_mug()
    uow.validated.update({"webshop:c1": 1, "marketplace:c1": 2, "webshop:c10": 1})

    [report] = await erase_customer(erasure(channel=None), uow)

    assert uow.validated == {"webshop:c10": 1}
    assert isinstance(report, ErasureApplied) and report.rows_changed == 2


async def test_each_channel_is_judged_by_its_own_policy() -> None:
    uow = await with_mug("1500.00")
    b2b, local, webshop = (received(price="1500.00", channel=c) for c in ("b2b", "local", "webshop"))
    [[validated], [rejected], [held]] = applied(await validate_orders([b2b, local, webshop], uow, POLICY))
    assert isinstance(validated, OrderValidated), "b2b holds only above 50000"
    assert isinstance(rejected, OrderRejected) and [r.code for r in rejected.reasons] == [
        "unsupported_country"
    ]
    assert isinstance(held, OrderHeld), "a channel the file does not name gets the defaults"
