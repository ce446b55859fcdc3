"""Order lifecycle part 2, end to end: pipelines, stage events, failures, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from libs.contracts import topics
from tests.e2e.conftest import LiveFleet
from tests.support.orders import adjustment, location, order, product
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e


async def _allocated_order(live: LiveFleet, item: str, wh: str, qty: int = 1, **order_kwargs: object) -> dict:  # type: ignore[type-arg]
    external_id = await live.submit(order(lines=[(item, qty, "10.00")], **order_kwargs))  # type: ignore[arg-type]
    await live.wait_status(external_id, "in_fulfillment")
    return max(live.history(external_id), key=lambda e: e["version"]) | {"external_id": external_id}


async def test_a_standard_order_travels_every_stage_to_delivered_with_stage_events_in_order(
    live: LiveFleet,
) -> None:
    await _travels_every_stage_to_delivered(live)


async def test_on_the_secured_broker_each_service_as_its_own_principal_takes_an_order_to_delivered(
    secure_live: LiveFleet,
) -> None:
    """SASL_SSL, deny-by-default ACLs, services that may not create topics: the same lifecycle, and
    notification (reading the public topics as itself) serves the delivered order. Each service is
    its own database role too, as deployed."""
    order_id = await _travels_every_stage_to_delivered(secure_live)
    roles = await secure_live.database_roles()
    assert roles == secure_live.own_roles()
    assert len(set(roles.values())) == len(roles)
    _, key = await secure_live.api_key("webshop")  # through Kafka as the operator principal
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        while True:
            view: dict[str, Any] = {}
            with contextlib.suppress(aiohttp.ClientConnectorError):  # the API may still be starting
                async with http.get(f"{secure_live.api}/orders/{order_id}") as response:
                    view = await response.json() if response.status == 200 else {}
            if view.get("status") == "delivered" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    assert view.get("status") == "delivered", view
    secure_live.fleet.assert_alive()


async def _travels_every_stage_to_delivered(live: LiveFleet) -> str:
    """Returns the order id."""
    item = sku("BOOK")
    wh = f"wh-{item}"
    await live.seed(
        products=[product(item)],
        locations=[location(wh, lat=52.4, lon=13.1)],
        adjustments=[adjustment(f"i-{item}", item, wh, delta=5)],
    )
    status = await _allocated_order(live, item, wh)
    order_id, external_id = status["order_id"], status["external_id"]
    [shipment] = status["shipments"]
    assert (shipment["pipeline"], shipment["stage"]) == ("standard", "new")
    assert status["eta"] is not None

    for stage in ("picking", "packed"):
        await live.move(shipment["shipment_id"], stage)
    await live.move(shipment["shipment_id"], "shipped", carrier="DHL", tracking_number="JD0001")
    shipped = await live.wait_status(external_id, "shipped")
    assert shipped["shipments"][0]["tracking_number"] == "JD0001"
    await live.move(shipment["shipment_id"], "delivered")
    await live.wait_status(external_id, "delivered")

    assert [e["status"] for e in live.history(external_id)] == [
        "received",
        "validated",
        "allocated",
        "in_fulfillment",
        "shipped",
        "delivered",
    ]
    await live.stages.wait_for(
        lambda _: ("standard", "delivered", None, "left") in live.stage_events(order_id),
        60,
        "the last stage event",
    )
    assert live.stage_events(order_id) == [
        ("standard", None, "new", "entered"),
        ("standard", "new", "picking", "moved"),
        ("standard", "picking", "packed", "moved"),
        ("standard", "packed", "shipped", "moved"),
        ("standard", "shipped", "delivered", "moved"),
        ("standard", "delivered", None, "left"),
    ]
    shipped_units = await live.wait_row(
        "SELECT row(on_hand, reserved, shipped)::text FROM allocation.stock WHERE sku = $1 AND shipped > 0",
        item,
    )
    assert shipped_units == "(4,0,1)"
    return str(order_id)


async def test_pipelines_are_chosen_by_method_and_location_kind(live: LiveFleet) -> None:
    a, b, c = sku("P1"), sku("P2"), sku("P3")
    await live.seed(
        products=[product(a), product(b), product(c)],
        locations=[location(f"wh-{a}"), location(f"drop-{b}", kind="dropship")],
        adjustments=[
            adjustment(f"i-{a}", a, f"wh-{a}", delta=5),
            adjustment(f"i-{b}", b, f"drop-{b}", delta=5),
            adjustment(f"i-{c}", c, f"wh-{a}", delta=5),
        ],
    )
    express = await _allocated_order(live, a, f"wh-{a}", method="express")
    dropship = await _allocated_order(live, b, f"drop-{b}")
    standard = await _allocated_order(live, c, f"wh-{a}")
    assert [s["shipments"][0]["pipeline"] for s in (express, dropship, standard)] == [
        "express",
        "dropship",
        "standard",
    ]


async def test_stages_move_forward_only_and_a_repeated_update_changes_nothing(live: LiveFleet) -> None:
    item = sku("FWD")
    await live.seed(
        products=[product(item)],
        locations=[location(f"wh-{item}")],
        adjustments=[adjustment(f"i-{item}", item, f"wh-{item}", delta=5)],
    )
    status = await _allocated_order(live, item, f"wh-{item}")
    shipment_id = status["shipments"][0]["shipment_id"]
    await live.move(shipment_id, "packed")  # skipping `picking` is allowed
    # The same update id again, now naming a later stage: it changes nothing.
    await live.move(shipment_id, "delivered", update_id=f"{shipment_id}:packed")
    await live.move(shipment_id, "picking", update_id=f"{shipment_id}:back")  # backwards: refused
    await live.move(shipment_id, "shipped")
    await live.wait_status(status["external_id"], "shipped")
    await live.stages.wait_for(
        lambda _: "shipped" in [e[2] for e in live.stage_events(status["order_id"])], 60, "the shipped stage"
    )
    assert [e[2] for e in live.stage_events(status["order_id"])] == ["new", "packed", "shipped"]
    backwards = f"{shipment_id}:back"

    def dead_lettered_backwards(letters: list[Any]) -> bool:
        return any(
            headers.get("dlq-cause") == "stage_backwards"
            and orjson.loads(r.value).get("update_id") == backwards
            for r in letters
            for headers in [{k: v.decode() for k, v in r.headers}]
        )

    await live.fulfillment_dead_letters.wait_for(
        lambda _: dead_lettered_backwards(live.fulfillment_dead_letters.raw),
        60,
        "the backwards update dead-lettered by fulfillment with cause stage_backwards",
    )
    refused = await live.wait_row(
        "SELECT outcome FROM fulfillment.applied_updates WHERE update_id = $1", f"{shipment_id}:back"
    )
    assert refused == "stage_backwards"


async def test_a_failed_shipment_is_written_off_and_resourced_from_another_location(live: LiveFleet) -> None:
    item = sku("FRAG")
    wh1, wh2 = f"wh1-{item}", f"wh2-{item}"
    await live.seed(
        products=[product(item)],
        locations=[location(wh1, cost="1.00"), location(wh2, cost="2.00")],
        adjustments=[
            adjustment(f"i1-{item}", item, wh1, delta=3),
            adjustment(f"i2-{item}", item, wh2, delta=3),
        ],
    )
    status = await _allocated_order(live, item, wh1)
    first = status["shipments"][0]
    assert first["location_id"] == wh1
    await live.move(first["shipment_id"], "failed", note="damaged")

    await live.status.wait_for(
        lambda rs: any(
            r.get("order_id") == status["order_id"]
            and r["status"] == "allocated"
            and r["shipments"]
            and r["shipments"][0]["location_id"] == wh2
            for r in rs
        ),
        60,
        "re-sourcing from the second warehouse",
    )
    await live.status.wait_for(
        lambda _: (
            [e["status"] for e in live.history(status["external_id"])][-3:]
            == ["in_fulfillment", "allocated", "in_fulfillment"]
        ),
        60,
        "in_fulfillment -> allocated (re-sourced) -> in_fulfillment",
    )
    written_off = await live.fetchval(
        "SELECT row(on_hand, reserved, written_off)::text FROM allocation.stock WHERE sku = $1 AND location_id = $2",
        item,
        wh1,
    )
    assert written_off == "(2,0,1)"
    assert (
        await live.fetchval(
            "SELECT reserved FROM allocation.stock WHERE sku = $1 AND location_id = $2", item, wh2
        )
        == 1
    )
    await live.stages.wait_for(
        lambda _: ("standard", "new", None, "left") in live.stage_events(status["order_id"]),
        60,
        "the failed parcel left its stage",
    )


async def test_cancelling_a_whole_order_before_shipping_releases_its_stock_for_the_next_order(
    live: LiveFleet,
) -> None:
    item = sku("CXL")
    wh = f"wh-{item}"
    await live.seed(
        products=[product(item)],
        locations=[location(wh)],
        adjustments=[adjustment(f"i-{item}", item, wh, delta=2)],
    )
    status = await _allocated_order(live, item, wh, qty=2)
    outcome = await live.cancel(status["order_id"], f"cx-{item}")
    assert outcome["outcome"] == "accepted"
    await live.wait_status(status["external_id"], "cancelled")
    assert await live.fetchval("SELECT reserved FROM allocation.stock WHERE sku = $1", item) == 0
    await live.stages.wait_for(
        lambda _: live.stage_events(status["order_id"])[-1:] == [("standard", "new", None, "left")],
        60,
        "the cancelled parcel left its stage",
    )

    repeated = {"request_id": f"cx-{item}", "order_id": status["order_id"], "reason": "customer asked"}
    await live.publisher.send(topics.ORDERS_CANCEL_REQUESTED, status["order_id"], repeated)
    barrier = await live.cancel(status["order_id"], f"cx2-{item}")  # sent after it, same partition
    assert [r["code"] for r in barrier["reasons"]] == ["already_final"]
    assert sum(1 for r in live.cancellations.records if r.get("request_id") == f"cx-{item}") == 1
    assert [e["status"] for e in live.history(status["external_id"])].count("cancelled") == 1
    follower = await _allocated_order(live, item, wh, qty=2)
    assert follower["shipments"][0]["lines"] == [{"sku": item, "quantity": 2}]


async def test_a_partial_cancel_releases_exactly_the_cancelled_lines(live: LiveFleet) -> None:
    a, b = sku("PA"), sku("PB")
    wh = f"wh-{a}"
    await live.seed(
        products=[product(a), product(b)],
        locations=[location(wh)],
        adjustments=[adjustment(f"i-{a}", a, wh, delta=5), adjustment(f"i-{b}", b, wh, delta=5)],
    )
    external_id = await live.submit(order(lines=[(a, 3, "10.00"), (b, 1, "10.00")]))
    status = await live.wait_status(external_id, "in_fulfillment")
    outcome = await live.cancel(
        status["order_id"], f"px-{a}", lines=[{"sku": a, "quantity": 2}, {"sku": b, "quantity": 1}]
    )
    assert outcome["outcome"] == "accepted"
    await live.status.wait_for(
        lambda rs: any(
            r.get("external_id") == external_id and r["status"] == "allocated" and r["version"] > 4
            for r in rs
        ),
        60,
        "the reduced allocation",
    )
    latest = [r for r in live.history(external_id) if r["status"] == "allocated"][-1]
    assert latest["shipments"][0]["lines"] == [{"sku": a, "quantity": 1}]
    assert await live.fetchval("SELECT reserved FROM allocation.stock WHERE sku = $1", a) == 1
    assert await live.fetchval("SELECT reserved FROM allocation.stock WHERE sku = $1", b) == 0


async def test_cancelling_after_shipping_is_refused_with_already_shipped(live: LiveFleet) -> None:
    item = sku("LATE")
    wh = f"wh-{item}"
    await live.seed(
        products=[product(item)],
        locations=[location(wh)],
        adjustments=[adjustment(f"i-{item}", item, wh, delta=5)],
    )
    status = await _allocated_order(live, item, wh)
    await live.move(status["shipments"][0]["shipment_id"], "shipped")
    await live.wait_status(status["external_id"], "shipped")
    outcome = await live.cancel(status["order_id"], f"late-{item}")
    assert outcome["outcome"] == "refused"
    assert [r["code"] for r in outcome["reasons"]] == ["already_shipped"]
    assert live.history(status["external_id"])[-1]["status"] == "shipped"


async def test_a_cancelled_backorder_is_never_allocated_later(live: LiveFleet) -> None:
    item = sku("BACK")
    wh = f"wh-{item}"
    await live.seed(products=[product(item)], locations=[location(wh)])
    external_id = await live.submit(order(lines=[(item, 1, "10.00")]))
    status = await live.wait_status(external_id, "backordered")
    assert (await live.cancel(status["order_id"], f"bx-{item}"))["outcome"] == "accepted"
    await live.wait_status(external_id, "cancelled")
    await live.seed(adjustments=[adjustment(f"late-{item}", item, wh, delta=5)])
    follower = await live.submit(order(lines=[(item, 1, "10.00")]))
    await live.wait_status(follower, "in_fulfillment")
    assert [e["status"] for e in live.history(external_id)][-1] == "cancelled"
    assert await live.fetchval("SELECT reserved FROM allocation.stock WHERE sku = $1", item) == 1


async def test_cancelling_an_order_that_does_not_exist_yet_is_refused_and_can_be_retried(
    live: LiveFleet,
) -> None:
    external_id = f"later-{secrets.token_hex(3)}"
    request = {"request_id": f"early-{external_id}", "channel": "webshop", "external_id": external_id}
    await live.publisher.send(topics.ORDERS_CANCEL_REQUESTED, f"webshop:{external_id}", request)
    await live.cancellations.wait_for(
        lambda rs: any(r.get("request_id") == request["request_id"] for r in rs), 60, "the refusal"
    )
    refusal = next(r for r in live.cancellations.records if r.get("request_id") == request["request_id"])
    assert (refusal["outcome"], refusal["order_id"], refusal["reasons"][0]["code"]) == (
        "refused",
        None,
        "unknown_order",
    )


async def test_every_release_goes_to_the_oldest_waiting_backorder_first(live: LiveFleet) -> None:
    """Units freed by a cancellation, by a location re-activated and by a partial cancel each go to
    the oldest backorder still waiting — never to a younger one, never left unused."""
    item, other = sku("FIFO"), sku("FIFO-B")
    wh, store = f"wh-{item}", f"store-{item}"
    await live.seed(
        products=[product(item), product(other)],
        locations=[location(wh), location(store, kind="store", active=False)],
        adjustments=[
            adjustment(f"i-{item}", item, wh, delta=2),
            adjustment(f"i-{other}", other, wh, delta=1),
            adjustment(f"s-{item}", item, store, delta=1),  # at an inactive location: not usable yet
        ],
    )
    partial = await live.submit(order(lines=[(item, 1, "10.00"), (other, 1, "10.00")]))
    partial_status = await live.wait_status(partial, "in_fulfillment")
    whole = await _allocated_order(live, item, wh)
    waiting = []
    for _ in range(3):  # one after the other, so their age is certain
        waiting.append(await live.submit(order(lines=[(item, 1, "10.00")])))
        await live.wait_status(waiting[-1], "backordered")
    oldest, middle, youngest = waiting

    def allocated(external_id: str) -> bool:
        return any(e["status"] == "allocated" for e in live.history(external_id))

    async def wait_allocated(external_id: str, what: str) -> None:
        await live.status.wait_for(lambda _: allocated(external_id), 60, what)

    # 1. A whole cancellation frees one unit: the oldest backorder gets it.
    assert (await live.cancel(whole["order_id"], f"cx-{item}"))["outcome"] == "accepted"
    await wait_allocated(oldest, "the oldest backorder to get the cancelled order's unit")
    assert not allocated(middle) and not allocated(youngest)

    # 2. The store becomes active: its unit goes to the oldest of those still waiting.
    await live.seed(locations=[location(store, kind="store", active=True)])
    await wait_allocated(middle, "the next oldest backorder to get the re-activated store's unit")
    assert not allocated(youngest)

    # 3. A partial cancel releases one unit of a reserved line: the youngest (last waiting) gets it.
    outcome = await live.cancel(
        partial_status["order_id"], f"px-{item}", lines=[{"sku": item, "quantity": 1}]
    )
    assert outcome["outcome"] == "accepted"
    await wait_allocated(youngest, "the last backorder to get the partially cancelled unit")
    reserved = await live.fetchval("SELECT sum(reserved) FROM allocation.stock WHERE sku = $1", item)
    on_hand = await live.fetchval("SELECT sum(on_hand) FROM allocation.stock WHERE sku = $1", item)
    assert (reserved, on_hand) == (3, 3)


@dataclass(frozen=True)
class TwoParcels:
    external_id: str
    order_id: str
    first_location: str
    second_sku: str
    spare_location: str


async def _second_parcel_failed_after_the_first_shipped(live: LiveFleet, *, spare: bool) -> TwoParcels:
    """An order of two skus that only two different warehouses stock, so it ships as two parcels:
    the first leaves, then the second fails. With ``spare``, a dearer third warehouse holds one
    more of the second sku."""
    x, y = sku("TWO-X"), sku("TWO-Y")
    wh1, wh2, wh3 = f"wh1-{x}", f"wh2-{x}", f"wh3-{x}"
    await live.seed(
        products=[product(x), product(y)],
        locations=[location(wh1, cost="1.00"), location(wh2, cost="2.00")]
        + ([location(wh3, cost="9.00")] if spare else []),
        adjustments=[adjustment(f"i1-{x}", x, wh1, delta=1), adjustment(f"i2-{x}", y, wh2, delta=1)]
        + ([adjustment(f"i3-{x}", y, wh3, delta=1)] if spare else []),
    )
    external_id = await live.submit(order(lines=[(x, 1, "10.00"), (y, 1, "10.00")]))
    status = await live.wait_status(external_id, "in_fulfillment")
    by_location = {s["location_id"]: s["shipment_id"] for s in status["shipments"]}
    assert set(by_location) == {wh1, wh2}
    await live.move(by_location[wh1], "shipped", carrier="UPS", tracking_number=f"1Z{x}")
    await live.wait_status(external_id, "partially_shipped")
    await live.move(by_location[wh2], "failed", note="damaged")
    return TwoParcels(external_id, status["order_id"], wh1, y, wh3)


async def test_a_parcel_failing_after_its_sibling_shipped_leaves_the_order_partially_shipped_and_cancellable(
    live: LiveFleet,
) -> None:
    o = await _second_parcel_failed_after_the_first_shipped(live, spare=True)
    await live.status.wait_for(
        lambda _: any(
            e["status"] == "partially_shipped"
            and any(s["location_id"] == o.spare_location for s in e["shipments"])
            for e in live.history(o.external_id)
        ),
        60,
        "the failed parcel sourced again from the third warehouse, the order still partially shipped",
    )
    assert "shipped" not in [e["status"] for e in live.history(o.external_id)]

    # The part that has not left can still be cancelled; then all that is left has shipped.
    lines = [{"sku": o.second_sku, "quantity": 1}]
    assert (await live.cancel(o.order_id, f"rest-{o.second_sku}", lines=lines))["outcome"] == "accepted"
    shipped = await live.wait_status(o.external_id, "shipped")
    assert [s["location_id"] for s in shipped["shipments"]] == [o.first_location]
    assert await live.fetchval("SELECT sum(reserved) FROM allocation.stock WHERE sku = $1", o.second_sku) == 0


async def test_a_failed_parcel_that_waits_for_stock_keeps_the_order_partially_shipped_and_cancellable(
    live: LiveFleet,
) -> None:
    o = await _second_parcel_failed_after_the_first_shipped(live, spare=False)
    await live.status.wait_for(
        lambda _: any(
            e["status"] == "partially_shipped"
            and [(r["code"], r["sku"]) for r in e["reasons"]] == [("insufficient_stock", o.second_sku)]
            for e in live.history(o.external_id)
        ),
        60,
        "the failed parcel's line waiting for stock, the order still partially shipped",
    )
    assert "shipped" not in [e["status"] for e in live.history(o.external_id)]

    lines = [{"sku": o.second_sku, "quantity": 1}]
    assert (await live.cancel(o.order_id, f"rest-{o.second_sku}", lines=lines))["outcome"] == "accepted"
    shipped = await live.wait_status(o.external_id, "shipped")
    assert [s["location_id"] for s in shipped["shipments"]] == [o.first_location]
