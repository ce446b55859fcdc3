"""Order lifecycle part 3, end to end on the real fleet through public topics only.

Pending payments: a reservation that waits for its payment, a payment that sends it on or cancels
it, and a deadline that survives the death of the process about to fire it and then fires exactly
once. Click-and-collect: a pickup order sourced at its store (or transferred from a warehouse), the
pickup pipeline to `collected`, the "ready for pickup" e-mail, and a parcel not collected in time
whose unit goes to the waiting backorder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.contracts import topics
from tests.e2e.conftest import LiveFleet, running_fleet
from tests.support.infra import Infra
from tests.support.kafka_io import wait_consumed
from tests.support.orders import adjustment, location, order, product
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e

QUICK = "quickpay"
"""A channel whose pending orders keep their stock 3 seconds."""
PATIENT = "patientpay"
"""A channel whose pending orders keep their stock 10 minutes (longer than any of these tests)."""
FALLING = "fallingback"
"""A channel whose express backorders accept a standard shipment after about 4 seconds."""
HASTY = "hastypickup"
"""A channel offering pickup whose parcels wait at the store about 4 seconds."""


@pytest.fixture(scope="module")
async def pay(e2e_infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveFleet]:
    """The fleet with a channels file of two more channels: their own reservation deadlines."""
    packaged = yaml.safe_load(Path("libs/policy/channels.yaml").read_text())
    packaged["channels"] |= {
        QUICK: {"payment": {"reservation_minutes": 0.05}},
        PATIENT: {"payment": {"reservation_minutes": 10}},
        HASTY: {"pickup": {"allowed": True, "collect_within_days": 0.00005}},
        FALLING: {"sourcing": {"fallbacks": [{"after_hours": 0.001, "shipping_method": "standard"}]}},
    }
    channels = tmp_path_factory.mktemp("policy") / "channels.yaml"
    channels.write_text(yaml.safe_dump(packaged))
    async with running_fleet(e2e_infra, tmp_path_factory, {"BATON_CHANNELS_FILE": str(channels)}) as fleet:
        yield fleet


async def payment(live: LiveFleet, event_id: str, placed: dict[str, Any], status: str) -> None:
    """The payment provider's event, naming the order as the channel knows it."""
    key = f"{placed['channel']}:{placed['external_id']}"
    body = {
        "payment_event_id": event_id,
        "channel": placed["channel"],
        "external_id": placed["external_id"],
        "status": status,
        "reference": f"psp-{event_id}",
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    await live.publisher.send(topics.PAYMENTS_UPDATES, key, body)


async def stocked(live: LiveFleet, name: str, units: int) -> str:
    item = sku(name)
    wh = f"wh-{item}"
    await live.seed(
        products=[product(item)],
        locations=[location(wh)],
        adjustments=[adjustment(f"in-{item}", item, wh, delta=units)],
    )
    return item


def statuses(live: LiveFleet, external_id: str) -> list[str]:
    return [r["status"] for r in live.history(external_id)]


async def cancelled_mail(live: LiveFleet, external_id: str, because: str) -> None:
    """The customer's cancellation e-mail arrives and says why."""
    for _ in range(600):
        mails: list[Any] = [
            m for m in live.mailbox.messages if f"{external_id} was cancelled" in str(m["Subject"])
        ]
        if mails:
            body = mails[0].get_content()
            assert because in body, body
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no cancellation e-mail for {external_id}")


async def test_an_authorized_payment_sends_the_reserved_order_to_fulfillment_once_per_payment_event(
    pay: LiveFleet, e2e_infra: Infra
) -> None:
    item = await stocked(pay, "PAYOK", 1)
    placed = order(channel=PATIENT, lines=[(item, 1, "10.00")], payment_status="pending")
    external_id = await pay.submit(placed)
    waiting = await pay.wait_status(external_id, "awaiting_payment")
    assert [r["code"] for r in waiting["reasons"]] == ["awaiting_payment"]
    assert [line["quantity"] for s in waiting["shipments"] for line in s["lines"]] == [1]
    await payment(pay, f"evt-{external_id}-1", placed, "authorized")
    await pay.wait_status(external_id, "in_fulfillment")
    # The provider sends the event again, and a "failed" under the same event id: neither counts.
    await payment(pay, f"evt-{external_id}-1", placed, "authorized")
    await payment(pay, f"evt-{external_id}-1", placed, "failed")
    await wait_consumed(
        e2e_infra.kafka, f"{pay.prefix}baton.intake.payment_updated", f"{pay.prefix}{topics.PAYMENTS_UPDATES}"
    )
    await pay.wait_row("SELECT count(*) = 0 FROM intake.outbox", what="intake's outbox drained")
    await pay.wait_row("SELECT count(*) = 0 FROM allocation.outbox", what="allocation's outbox drained")
    await pay.status.caught_up()
    assert (
        await pay.fetchval(
            "SELECT count(*) FROM intake.payment_events WHERE payment_event_id = $1", f"evt-{external_id}-1"
        )
        == 1
    )
    assert "cancelled" not in statuses(pay, external_id)
    assert statuses(pay, external_id)[:5] == [
        "received",
        "validated",
        "awaiting_payment",
        "allocated",
        "in_fulfillment",
    ]


async def test_cancelling_a_line_while_the_payment_is_pending_frees_its_units_at_once(pay: LiveFleet) -> None:
    item, other = await stocked(pay, "PAYPART", 2), await stocked(pay, "PAYKEEP", 1)
    placed = order(channel=PATIENT, lines=[(item, 2, "10.00"), (other, 1, "10.00")], payment_status="pending")
    external_id = await pay.submit(placed)
    waiting = await pay.wait_status(external_id, "awaiting_payment")
    outcome = await pay.cancel(waiting["order_id"], f"cx-{item}", lines=[{"sku": item, "quantity": 1}])
    assert outcome["outcome"] == "accepted", outcome

    def units(status: dict[str, Any]) -> list[tuple[str, int]]:
        return sorted((line["sku"], line["quantity"]) for s in status["shipments"] for line in s["lines"])

    await pay.status.wait_for(
        lambda _: (
            [units(r) for r in pay.history(external_id) if r["status"] == "awaiting_payment"][-1:]
            == [sorted([(item, 1), (other, 1)])]
        ),
        60,
        "the order still awaiting its payment, one unit fewer",
    )
    # The freed unit is for sale at once; the reduced order is what is fulfilled once paid.
    next_one = await pay.submit(order(lines=[(item, 1, "10.00")]))
    await pay.wait_status(next_one, "in_fulfillment")
    await payment(pay, f"evt-{external_id}-1", placed, "authorized")
    fulfilled = await pay.wait_status(external_id, "in_fulfillment")
    assert units(fulfilled) == sorted([(item, 1), (other, 1)])


async def test_a_failed_payment_cancels_the_order_and_frees_its_stock(pay: LiveFleet) -> None:
    item = await stocked(pay, "PAYFAIL", 1)
    placed = order(channel=PATIENT, lines=[(item, 1, "10.00")], payment_status="pending")
    external_id = await pay.submit(placed)
    await pay.wait_status(external_id, "awaiting_payment")
    await payment(pay, f"evt-{external_id}-1", placed, "failed")
    cancelled = await pay.wait_status(external_id, "cancelled")
    assert [r["code"] for r in cancelled["reasons"]] == ["payment_failed"]
    # The unit is free again: the next order for it is allocated.
    next_one = await pay.submit(order(lines=[(item, 1, "10.00")]))
    await pay.wait_status(next_one, "in_fulfillment")
    await cancelled_mail(pay, external_id, "your payment did not go through")


async def test_the_deadline_releases_the_stock_to_the_waiting_backorder_and_tells_the_customer(
    pay: LiveFleet,
) -> None:
    item = await stocked(pay, "PAYLATE", 1)
    late = await pay.submit(order(channel=QUICK, lines=[(item, 1, "10.00")], payment_status="pending"))
    await pay.wait_status(late, "awaiting_payment")
    waiting = await pay.submit(order(lines=[(item, 1, "10.00")]))
    await pay.wait_status(waiting, "backordered")

    cancelled = await pay.wait_status(late, "cancelled")
    assert [r["code"] for r in cancelled["reasons"]] == ["payment_timeout"]
    await pay.wait_status(waiting, "in_fulfillment")
    await cancelled_mail(pay, late, "we did not receive your payment in time")
    assert not any(
        r.get("request_id") for r in pay.cancellations.records if r.get("order_id") == cancelled["order_id"]
    )


async def test_a_deadline_whose_process_dies_before_it_commits_fires_exactly_once_after_restart(
    pay: LiveFleet,
) -> None:
    """Only allocation.1 runs, with the fault hook: it applies the due timer and exits before the
    commit. Both allocation processes then start normally, and the deadline fires once: one
    cancellation, one allocation of the waiting backorder, one unit reserved."""
    item = await stocked(pay, "PAYKILL", 1)
    fleet = pay.fleet
    fleet.terminate("allocation.2")
    fleet.terminate("allocation.1")
    fleet.start("allocation", "allocation.1", {"BATON_FAULT_TIMER_EXIT_BEFORE_COMMIT": "true"})

    doomed = await pay.submit(order(channel=QUICK, lines=[(item, 1, "10.00")], payment_status="pending"))
    reserved = await pay.wait_status(doomed, "awaiting_payment")
    waiting = await pay.submit(order(lines=[(item, 1, "10.00")]))
    await pay.wait_status(waiting, "backordered")

    code = await asyncio.to_thread(fleet.processes["allocation.1"].wait, 90)
    assert code == 87, "the timer worker applied the deadline and exited before its commit"
    fleet.processes.pop("allocation.1")
    assert (
        await pay.fetchval(
            "SELECT count(*) FROM allocation.timers WHERE kind = 'payment_deadline' AND key = $1",
            reserved["order_id"],
        )
        == 1
    ), "the deadline survived the crash"

    fleet.start("allocation", "allocation.1")
    fleet.start("allocation", "allocation.2")
    await pay.wait_status(doomed, "cancelled")
    await pay.wait_status(waiting, "in_fulfillment")
    await pay.wait_row(
        "SELECT count(*) = 0 FROM allocation.timers WHERE key = $1", reserved["order_id"], what="timer gone"
    )
    await pay.wait_row("SELECT count(*) = 0 FROM allocation.outbox", what="allocation's outbox drained")
    await pay.status.caught_up()

    assert statuses(pay, doomed).count("cancelled") == 1
    assert statuses(pay, waiting).count("allocated") == 1
    versions = [r["version"] for r in pay.history(doomed)]
    assert versions == list(range(1, len(versions) + 1))
    assert await pay.fetchval("SELECT sum(reserved) FROM allocation.stock WHERE sku = $1", item) == 1
    pay.fleet.assert_alive()


async def store_with(live: LiveFleet, name: str, units: int, *, warehouse_units: int = 0) -> tuple[str, str]:
    """A sku, and a store holding ``units`` of it (a warehouse holds ``warehouse_units``)."""
    item = sku(name)
    store, wh = f"store-{item}", f"wh-{item}"
    await live.seed(
        products=[product(item)],
        locations=[location(store, "store"), location(wh)],
        adjustments=[
            adjustment(f"in-{item}-s", item, store, delta=units),
            *([adjustment(f"in-{item}-w", item, wh, delta=warehouse_units)] if warehouse_units else []),
        ],
    )
    return item, store


def pickup_order(item: str, store: str, channel: str = "webshop") -> dict[str, Any]:
    return order(channel=channel, lines=[(item, 1, "10.00")], method="pickup") | {"pickup_location_id": store}


async def mail_with_subject(live: LiveFleet, subject: str) -> None:
    for _ in range(600):
        if any(str(m["Subject"]) == subject for m in live.mailbox.messages):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no e-mail {subject!r}")


async def test_a_pickup_order_is_picked_at_its_store_ready_for_pickup_and_collected(pay: LiveFleet) -> None:
    item, store = await store_with(pay, "PICK", 1, warehouse_units=5)
    external_id = await pay.submit(pickup_order(item, store, channel="pos"))  # pos: no transfers
    status = await pay.wait_status(external_id, "in_fulfillment")
    [shipment] = status["shipments"]
    assert (shipment["location_id"], shipment["pipeline"], shipment["stage"]) == (store, "pickup", "new")
    await pay.move(shipment["shipment_id"], "picking")
    await pay.move(shipment["shipment_id"], "ready_for_pickup")
    await pay.wait_status(external_id, "ready_for_pickup")
    await mail_with_subject(pay, f"Your order {external_id} is ready for pickup")
    await pay.move(shipment["shipment_id"], "collected")
    await pay.wait_status(external_id, "delivered")
    assert statuses(pay, external_id) == [
        "received",
        "validated",
        "allocated",
        "in_fulfillment",
        "ready_for_pickup",
        "delivered",
    ]
    # A second pickup at the store finds no unit there, and pos may not transfer from the warehouse.
    second = await pay.submit(pickup_order(item, store, channel="pos"))
    await pay.wait_status(second, "backordered")


async def test_a_channel_that_allows_transfers_sources_a_pickup_from_a_warehouse(pay: LiveFleet) -> None:
    item, store = await store_with(pay, "XFER", 0, warehouse_units=2)
    external_id = await pay.submit(pickup_order(item, store))  # webshop: transfer_from_warehouse
    status = await pay.wait_status(external_id, "in_fulfillment")
    assert [(s["location_id"], s["pipeline"]) for s in status["shipments"]] == [(f"wh-{item}", "pickup")]


async def test_a_pickup_channel_not_offering_pickup_is_rejected(pay: LiveFleet) -> None:
    item, store = await store_with(pay, "NOPICK", 1)
    external_id = await pay.submit(pickup_order(item, store, channel="marketplace"))
    rejected = await pay.wait_status(external_id, "rejected")
    assert [r["code"] for r in rejected["reasons"]] == ["pickup_not_offered"]


async def test_a_parcel_not_collected_in_time_is_cancelled_and_its_unit_goes_to_the_waiting_backorder(
    pay: LiveFleet,
) -> None:
    item, store = await store_with(pay, "UNCOLL", 1)
    external_id = await pay.submit(pickup_order(item, store, channel=HASTY))
    status = await pay.wait_status(external_id, "in_fulfillment")
    [shipment] = status["shipments"]
    waiting = await pay.submit(order(lines=[(item, 1, "10.00")]))  # a standard order the store may ship
    await pay.wait_status(waiting, "backordered")
    await pay.move(shipment["shipment_id"], "ready_for_pickup")
    await pay.wait_status(external_id, "ready_for_pickup")

    cancelled = await pay.wait_status(external_id, "cancelled")
    assert [r["code"] for r in cancelled["reasons"]] == ["not_collected"]
    await pay.wait_status(waiting, "in_fulfillment")
    await pay.stages.wait_for(
        lambda _: ("pickup", "ready_for_pickup", None, "left") in pay.stage_events(cancelled["order_id"]),
        60,
        "the uncollected parcel left its stage",
    )
    await cancelled_mail(pay, external_id, "it was not collected in time")


async def test_a_ship_available_channel_ships_what_is_in_stock_and_the_rest_follows_on_its_own(
    pay: LiveFleet,
) -> None:
    """`marketplace` ships what is available (the packaged channels file): one of two skus is in stock."""
    now = await stocked(pay, "AVNOW", 1)
    later = sku("AVLATER")
    wh = f"wh-{now}"
    await pay.seed(products=[product(later)])
    external_id = await pay.submit(
        order(channel="marketplace", lines=[(now, 1, "10.00"), (later, 2, "10.00")])
    )
    split = await pay.wait_status(external_id, "backordered")
    assert [(line["sku"], line["quantity"]) for s in split["shipments"] for line in s["lines"]] == [(now, 1)]
    assert [(r["code"], r["sku"]) for r in split["reasons"]] == [("insufficient_stock", later)]
    [first] = split["shipments"]
    await pay.wait_status(external_id, "in_fulfillment")
    await pay.move(first["shipment_id"], "shipped", carrier="DHL", tracking_number="AV1")
    await pay.wait_status(external_id, "partially_shipped")

    await pay.seed(adjustments=[adjustment(f"in-{later}", later, wh, delta=2)])

    def rest_allocated(records: list[dict[str, Any]]) -> bool:
        return any(r.get("external_id") == external_id and len(r.get("shipments", [])) == 2 for r in records)

    await pay.status.wait_for(rest_allocated, 60, "the rest as its own shipment")
    latest = max(
        (r for r in pay.status.records if r.get("external_id") == external_id and len(r["shipments"]) == 2),
        key=lambda r: r["version"],
    )
    [rest] = [s for s in latest["shipments"] if s["shipment_id"] != first["shipment_id"]]
    assert [(line["sku"], line["quantity"]) for line in rest["lines"]] == [(later, 2)]
    await pay.move(rest["shipment_id"], "shipped", carrier="DHL", tracking_number="AV2")
    await pay.wait_status(external_id, "shipped")


async def test_an_express_backorder_falls_back_to_a_standard_shipment_from_a_store_after_its_tier(
    pay: LiveFleet,
) -> None:
    """Express ships only from warehouses; the only unit is in a store. After the channel's tier the
    order accepts a standard shipment, and the store ships it through the standard pipeline."""
    item, store = await store_with(pay, "FALL", 1)
    external_id = await pay.submit(order(channel=FALLING, lines=[(item, 1, "10.00")], method="express"))
    await pay.wait_status(external_id, "backordered")
    status = await pay.wait_status(external_id, "in_fulfillment")
    assert [(s["location_id"], s["pipeline"]) for s in status["shipments"]] == [(store, "standard")]
