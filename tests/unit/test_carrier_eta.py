"""A carrier's ETA: it replaces Baton's estimate for its shipment and re-announces the order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from libs.contracts.fulfillment import FulfillmentUpdate
from libs.platform.messaging import Rejected
from tests.support.orders import stage_update
from tests.unit.test_fulfillment_use_cases import (
    BERLIN,
    MUNICH,
    in_fulfillment,
    move,
    progress,
    stages,
    with_locations,
)

pytestmark = pytest.mark.unit

CARRIER_SAYS = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)


def update(
    shipment_id: str, stage: str, eta: datetime | None = None, update_id: str | None = None
) -> FulfillmentUpdate:
    body = stage_update(shipment_id, stage, update_id=update_id) | {"eta": eta.isoformat() if eta else None}
    return FulfillmentUpdate.model_validate(body)


async def test_an_eta_alone_with_the_current_stage_re_announces_the_order_with_it_once() -> None:
    uow = await with_locations(("wh", "warehouse", MUNICH))
    await in_fulfillment(uow, ("s1", "wh", {"A": 1}))
    [shipped] = await move(uow, update("s1", "shipped"))
    assert isinstance(shipped, list) and progress(shipped).eta != CARRIER_SAYS

    [events] = await move(uow, update("s1", "shipped", eta=CARRIER_SAYS, update_id="eta-1"))
    assert isinstance(events, list) and stages(events) == []
    announced = progress(events)
    assert (announced.status, announced.eta) == ("shipped", CARRIER_SAYS)
    assert uow.applied["eta-1"][1] == "stayed"
    assert await move(uow, update("s1", "shipped", eta=CARRIER_SAYS, update_id="eta-1")) == [[]]


async def test_the_carriers_eta_given_with_a_move_stands_for_later_moves() -> None:
    uow = await with_locations(("wh", "warehouse", BERLIN), ("far", "warehouse", MUNICH))
    await in_fulfillment(uow, ("s1", "wh", {"A": 1}), ("s2", "far", {"B": 1}))
    [first] = await move(uow, update("s1", "shipped", eta=CARRIER_SAYS))
    assert isinstance(first, list)
    [later] = await move(uow, update("s2", "shipped"))
    assert isinstance(later, list) and progress(later).status == "shipped"
    assert uow.known_shipments["s1"].carrier_eta == CARRIER_SAYS
    assert progress(later).eta == CARRIER_SAYS  # later than the estimate for s2: the latest wins


async def test_the_current_stage_without_an_eta_is_still_refused() -> None:
    uow = await with_locations(("wh", "warehouse", None))
    await in_fulfillment(uow, ("s1", "wh", {"A": 1}))
    [refused] = await move(uow, update("s1", "new"))
    assert isinstance(refused, Rejected) and refused.cause == "stage_backwards"
