"""Order edits on the running fleet: a new address and new lines before shipping (re-validated,
stock released and reserved by exactly the difference, a new status version with the edited
details, the outcome on `orders.edits.v1`); refusals; and the race: 200 orders, each with an edit
and a shipment update sent together, never leave stock or status inconsistent."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from libs.contracts import topics
from tests.e2e.conftest import LiveFleet
from tests.support.infra import Infra
from tests.support.kafka_io import TopicWatcher
from tests.support.orders import adjustment, location, order, product, stage_update
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def edits(live: LiveFleet, e2e_infra: Infra) -> AsyncIterator[TopicWatcher]:
    watcher = TopicWatcher(e2e_infra.kafka, live.prefix + topics.ORDERS_EDITS)
    await watcher.start()
    try:
        yield watcher
    finally:
        await watcher.stop()


async def outcome(edits: TopicWatcher, request_id: str, timeout: float = 90) -> dict[str, Any]:
    await edits.wait_for(
        lambda rs: any(r.get("request_id") == request_id for r in rs), timeout, f"the outcome of {request_id}"
    )
    return next(r for r in edits.records if r.get("request_id") == request_id)


async def stock(live: LiveFleet, item: str) -> tuple[int, int]:
    """(on hand, reserved) of the sku, over its locations."""
    on_hand = await live.fetchval("SELECT sum(on_hand) FROM allocation.stock WHERE sku = $1", item)
    reserved = await live.fetchval("SELECT sum(reserved) FROM allocation.stock WHERE sku = $1", item)
    return int(on_hand), int(reserved)


def lines(*items: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"sku": s, "quantity": q, "unit_price": "10.00"} for s, q in items]


def payment(*items: tuple[str, int]) -> dict[str, Any]:
    total = sum((Decimal("10.00") * q for _, q in items), Decimal(0))
    return {"status": "authorized", "reference": "pay-edit", "amount": str(total)}


async def seeded(live: LiveFleet, units: int, *names: str) -> list[str]:
    items = [sku(n) for n in names]
    wh = f"wh-{items[0]}"
    await live.seed(
        products=[product(i, "10.00") for i in items],
        locations=[location(wh, lat=52.5, lon=13.4)],
        adjustments=[adjustment(f"init-{i}", i, wh, delta=units) for i in items],
    )
    return items


async def test_an_edit_before_shipping_changes_address_and_lines_and_reserves_exactly_the_difference(
    live: LiveFleet, edits: TopicWatcher
) -> None:
    mug, cup = await seeded(live, 10, "MUG", "CUP")
    body = order(lines=[(mug, 2, "10.00")])
    await live.submit(body)
    allocated = await live.wait_status(body["external_id"], "allocated")
    order_id = allocated["order_id"]
    assert await stock(live, mug) == (10, 2)
    address = body["shipping_address"] | {"line1": "Neue Strasse 2"}
    new_lines = [(mug, 1), (cup, 3)]
    await live.publisher.send(
        topics.ORDERS_EDIT_REQUESTED,
        order_id,
        {
            "request_id": "ed-happy",
            "order_id": order_id,
            "shipping_address": address,
            "lines": lines(*new_lines),
            "payment": payment(*new_lines),
        },
    )
    told = await outcome(edits, "ed-happy")
    assert told["outcome"] == "accepted" and told["order"]["shipping_address"]["line1"] == "Neue Strasse 2"

    def edited(records: list[dict[str, Any]]) -> bool:
        return any(r.get("order_id") == order_id and r.get("order") for r in records)

    await live.status.wait_for(edited, 60, "the status version with the edited details")
    version = next(r for r in live.status.records if r.get("order_id") == order_id and r.get("order"))
    assert version["status"] == "allocated"
    assert sorted((x["sku"], x["quantity"]) for s in version["shipments"] for x in s["lines"]) == sorted(
        new_lines
    )
    assert {s["shipment_id"] for s in version["shipments"]}.isdisjoint(
        {s["shipment_id"] for s in allocated["shipments"]}
    )
    assert (await stock(live, mug), await stock(live, cup)) == ((10, 1), (10, 3))
    # The same request again changes nothing; the edited order ships as edited.
    await live.publisher.send(
        topics.ORDERS_EDIT_REQUESTED,
        order_id,
        {"request_id": "ed-happy", "order_id": order_id, "lines": lines(*new_lines)},
    )
    [new_shipment] = version["shipments"]

    def held(records: list[dict[str, Any]]) -> bool:  # fulfillment holds the new parcel
        return any(
            r.get("order_id") == order_id
            and r["status"] == "in_fulfillment"
            and [s["shipment_id"] for s in r["shipments"]] == [new_shipment["shipment_id"]]
            for r in records
        )

    await live.status.wait_for(held, 60, "fulfillment to hold the edited order's parcel")
    await live.move(new_shipment["shipment_id"], "shipped")
    await live.wait_status(body["external_id"], "shipped")
    assert (await stock(live, mug), await stock(live, cup)) == ((9, 0), (7, 0))
    assert [r["request_id"] for r in edits.records].count("ed-happy") == 1


async def test_edits_that_cannot_be_made_are_refused_and_change_nothing(
    live: LiveFleet, edits: TopicWatcher
) -> None:
    mug, cup = await seeded(live, 3, "MUG2", "CUP2")
    body = order(lines=[(mug, 1, "10.00")])
    await live.submit(body)
    allocated = await live.wait_status(body["external_id"], "in_fulfillment")
    order_id = allocated["order_id"]

    async def refused(request_id: str, new: list[tuple[str, int]]) -> list[str]:
        await live.publisher.send(
            topics.ORDERS_EDIT_REQUESTED,
            order_id,
            {"request_id": request_id, "order_id": order_id, "lines": lines(*new), "payment": payment(*new)},
        )
        told = await outcome(edits, request_id)
        assert told["outcome"] == "refused", told
        return [r["code"] for r in told["reasons"]]

    assert "unknown_sku" in await refused("ed-ghost", [(f"GHOST-{mug}", 1)])
    assert await refused("ed-greedy", [(mug, 1), (cup, 4)]) == ["insufficient_stock"]
    assert await stock(live, mug) == (3, 1) and await stock(live, cup) == (3, 0)
    await live.move(allocated["shipments"][0]["shipment_id"], "shipped")
    await live.wait_status(body["external_id"], "shipped")
    assert await refused("ed-late", [(mug, 1), (cup, 1)]) == ["already_shipped"]


async def test_an_edit_and_a_shipment_update_arriving_together_never_leave_stock_or_status_inconsistent(
    live: LiveFleet, edits: TopicWatcher, e2e_infra: Infra
) -> None:
    """200 orders of one unit each, each in its pipeline. For each, an edit to two units is sent, and
    the moment allocation forwards it to fulfillment (read on `fulfillment.facts.v1`) the update that
    ships its parcel is sent too: the two wait for fulfillment together, which applies them one after
    the other in either order. Each edit is then accepted (the parcel never shipped: two units
    reserved, a new shipment) or refused as already shipped (one unit left the stock), never a mix."""
    [item] = await seeded(live, 1000, "RACE")
    bodies = [order(lines=[(item, 1, "10.00")]) for _ in range(200)]
    for body in bodies:
        await live.submit(body)
    started = [await live.wait_status(b["external_id"], "in_fulfillment", timeout=180) for b in bodies]
    assert await stock(live, item) == (1000, 200)
    forwarded = TopicWatcher(e2e_infra.kafka, live.prefix + topics.facts_topic("fulfillment"))
    await forwarded.start()
    rng = random.Random(17)

    async def pair(status: dict[str, Any]) -> None:
        order_id, [shipment] = status["order_id"], status["shipments"]
        request_id = f"race-{order_id}"
        edit = {
            "request_id": request_id,
            "order_id": order_id,
            "lines": lines((item, 2)),
            "payment": payment((item, 2)),
        }
        await live.publisher.send(topics.ORDERS_EDIT_REQUESTED, order_id, edit)
        await forwarded.wait_for(
            lambda rs: any(
                r.get("request_id") == request_id and r.get("event_type") == "order.edit-forwarded"
                for r in rs
            ),
            120,
            f"{request_id} forwarded to fulfillment",
        )
        await asyncio.sleep(rng.uniform(0, 0.05))
        update = stage_update(shipment["shipment_id"], "shipped")
        await live.publisher.send(topics.FULFILLMENT_UPDATES, shipment["shipment_id"], update)

    try:
        await asyncio.gather(*(pair(s) for s in started))
    finally:
        await forwarded.stop()
    told = {s["order_id"]: await outcome(edits, f"race-{s['order_id']}", timeout=240) for s in started}
    accepted = [o for o, r in told.items() if r["outcome"] == "accepted"]
    refused = [o for o, r in told.items() if r["outcome"] == "refused"]
    assert all([x["code"] for x in told[o]["reasons"]] == ["already_shipped"] for o in refused), [
        told[o] for o in refused if [x["code"] for x in told[o]["reasons"]] != ["already_shipped"]
    ]
    by_id = {s["order_id"]: b for s, b in zip(started, bodies, strict=True)}
    for order_id in refused:
        await live.wait_status(by_id[order_id]["external_id"], "shipped", timeout=120)

    def all_edited(records: list[dict[str, Any]]) -> bool:
        return set(accepted) <= {r["order_id"] for r in records if r.get("order")}

    await live.status.wait_for(
        all_edited, 120, "a status version with the edited details for every accepted edit"
    )
    expected = (1000 - len(refused), 2 * len(accepted))
    deadline = asyncio.get_running_loop().time() + 120
    while await stock(live, item) != expected:
        assert asyncio.get_running_loop().time() < deadline, (await stock(live, item), expected)
        await asyncio.sleep(0.5)
    for order_id in accepted:
        history = [r for r in live.status.records if r.get("order_id") == order_id]
        assert not any(r["status"] in ("shipped", "partially_shipped") for r in history), history
        edited = max((r for r in history if r.get("order")), key=lambda r: r["version"])
        assert [x["quantity"] for s in edited["shipments"] for x in s["lines"]] == [2], edited
    print(f"race: {len(accepted)} edits accepted, {len(refused)} refused as already shipped")


async def test_an_edit_is_judged_by_the_plugin_rules_in_force_and_a_daily_limit_leaves_out_its_own_units(
    live: LiveFleet, edits: TopicWatcher
) -> None:
    """The fleet runs the example plugin's `limited_sku_daily_limit` (3 units of an LTD- sku per
    customer per day): an order of 2 may become 3, not 4 — its own 2 are not counted twice."""
    [limited] = await seeded(live, 10, "LTD")
    body = order(lines=[(limited, 2, "10.00")])
    await live.submit(body)
    order_id = (await live.wait_status(body["external_id"], "in_fulfillment"))["order_id"]

    async def edit_to(units: int) -> dict[str, Any]:
        request_id = f"ed-{limited}-{units}"
        new = [(limited, units)]
        await live.publisher.send(
            topics.ORDERS_EDIT_REQUESTED,
            order_id,
            {"request_id": request_id, "order_id": order_id, "lines": lines(*new), "payment": payment(*new)},
        )
        return await outcome(edits, request_id)

    too_many = await edit_to(4)
    assert too_many["outcome"] == "refused" and [r["code"] for r in too_many["reasons"]] == [
        "limited_sku_daily_limit"
    ], too_many
    assert await stock(live, limited) == (10, 2)
    assert (await edit_to(3))["outcome"] == "accepted"
    deadline = asyncio.get_running_loop().time() + 60
    while await stock(live, limited) != (10, 3):
        assert asyncio.get_running_loop().time() < deadline, await stock(live, limited)
        await asyncio.sleep(0.2)
