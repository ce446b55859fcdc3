"""The typed router: types to handlers, records to contracts, events to their topics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import orjson
import pytest

from libs.contracts.envelope import Event
from libs.contracts.lifecycle import OrderCancelRequested, OrderRejected, OrderValidated
from libs.contracts.orders import OrderDetails, Reason
from libs.contracts.topics import facts_topic
from libs.contracts.topology import SERVICE_TOPOLOGY, Input, ServiceTopology
from libs.platform.records import Incoming, Outgoing, Rejected
from libs.platform.routing import Outcome, ServiceRouter
from tests.support.orders import order

pytestmark = pytest.mark.unit

ALLOCATION = SERVICE_TOPOLOGY["allocation"]


def fact_record(event: Event, offset: int, *, header: bool = True) -> Incoming:
    headers = {"event_id": str(event.event_id), "event_type": event.event_type} if header else {}
    return Incoming(facts_topic("allocation"), 0, offset, "k", event.model_dump_json().encode(), headers)


def validated() -> OrderValidated:
    return OrderValidated(order_id=uuid4(), order=OrderDetails.model_validate(order()))


def router_calling(log: list[tuple[str, int]]) -> ServiceRouter[object]:
    """Allocation's facts with handlers that log how they were called and emit nothing."""
    router: ServiceRouter[object] = ServiceRouter(ALLOCATION, lambda conn: conn)

    @router.on_batch(OrderValidated)
    async def validated_batch(events: Sequence[OrderValidated], uow: object) -> list[Outcome]:
        log.append(("validated", len(events)))
        return [[] for _ in events]

    @router.on(OrderCancelRequested)
    async def cancel(event: OrderCancelRequested, uow: object) -> list[Event]:
        log.append(("cancel", 1))
        return []

    for contract in ALLOCATION.input("order_facts").carries:
        if contract not in (OrderValidated, OrderCancelRequested):
            router.on(contract)(_nothing)
    for other in ALLOCATION.inputs:
        if other.name != "order_facts":
            router.on(*other.carries)(_nothing)
    return router


async def _nothing(event: Any, uow: object) -> list[Event]:
    return []


async def test_consecutive_objects_of_a_batch_handler_form_one_call_and_order_is_kept() -> None:
    log: list[tuple[str, int]] = []
    [facts] = [b for b in router_calling(log).bind() if b.name == "order_facts"]
    cancel = OrderCancelRequested(order_id=uuid4(), request_id="r1")
    events = [validated(), validated(), cancel, validated()]
    items = [facts.parse(fact_record(e, i)) for i, e in enumerate(events)]
    results = await facts.apply(object(), items)
    assert log == [("validated", 2), ("cancel", 1), ("validated", 1)]
    assert results == [[], [], [], []]


def test_a_record_is_read_by_its_event_type_header_or_by_its_body() -> None:
    [facts] = [b for b in router_calling([]).bind() if b.name == "order_facts"]
    event = validated()
    assert facts.parse(fact_record(event, 1)).parsed == event
    assert facts.parse(fact_record(event, 2, header=False)).parsed == event
    garbage = facts.parse(Incoming(facts_topic("allocation"), 0, 3, "k", b"{nope", {}))
    assert isinstance(garbage.parsed, Rejected) and garbage.parsed.cause == "invalid_json"
    wrong = Incoming(
        facts_topic("allocation"), 0, 4, "k", orjson.dumps({"event_type": "order.validated"}), {}
    )
    assert isinstance(facts.parse(wrong).parsed, Rejected)


def test_a_type_the_input_does_not_carry_is_skipped_not_applied() -> None:
    [facts] = [b for b in router_calling([]).bind() if b.name == "order_facts"]
    foreign = OrderRejected(order_id=uuid4(), reasons=[Reason(code="x", message="y")])
    assert not facts.wants(fact_record(foreign, 1))
    assert facts.wants(fact_record(validated(), 2))


def test_binding_fails_when_a_carried_type_has_no_handler() -> None:
    router: ServiceRouter[object] = ServiceRouter(ALLOCATION, lambda conn: conn)
    router.on(OrderValidated)(_nothing)
    with pytest.raises(ValueError, match="no handler for"):
        router.bind()


def test_binding_fails_when_a_handler_takes_a_type_no_input_carries() -> None:
    router: ServiceRouter[object] = ServiceRouter(ALLOCATION, lambda conn: conn)
    router.on(OrderRejected)(_nothing)
    with pytest.raises(LookupError, match="no input carrying OrderRejected"):
        router.bind()


def test_events_go_to_every_consumer_of_their_type_keyed_by_their_aggregate() -> None:
    [facts] = [b for b in router_calling([]).bind() if b.name == "order_facts"]
    rejected = OrderRejected(order_id=uuid4(), reasons=[])
    with pytest.raises(TypeError, match="does not declare"):
        facts.route([rejected])  # allocation never emits order.rejected
    validation = SERVICE_TOPOLOGY["validation"]
    router: ServiceRouter[object] = ServiceRouter(validation, lambda conn: conn)
    for spec in validation.inputs:
        router.on(*spec.carries)(_nothing)
    [received] = [b for b in router.bind() if b.name == "order_facts"]
    fact = validated()
    out: list[Outgoing] = received.route([fact])
    assert [(o.topic, o.key) for o in out] == [
        (facts_topic("intake"), str(fact.order_id)),
        (facts_topic("allocation"), str(fact.order_id)),
    ]
    assert len({o.value for o in out}) == 1 and out[0].headers["event_id"] == str(fact.event_id)


async def test_a_record_handler_that_rejects_dead_letters_that_record_only() -> None:
    probe = ServiceTopology("probe", (Input("in", "probe.v1", (OrderValidated,)),), ())
    router: ServiceRouter[object] = ServiceRouter(probe, lambda conn: conn)

    @router.on(OrderValidated)
    async def picky(event: OrderValidated, uow: object) -> list[Event]:
        if event.order.external_id.endswith("bad"):
            raise Rejected("unwanted", "no")
        return []

    [bound] = router.bind()
    good = validated()
    bad = OrderValidated(order_id=uuid4(), order=good.order.model_copy(update={"external_id": "x-bad"}))
    items = [bound.parse(fact_record(e, i)) for i, e in enumerate((good, bad, good))]
    results = await bound.apply(object(), items)
    assert results[0] == [] and results[2] == []
    assert isinstance(results[1], Rejected) and results[1].cause == "unwanted"
