"""Pending payments end to end, on the real fleet through public topics only: a reservation that waits
for its payment, a payment that sends it on or cancels it, and a deadline that survives the death of
the process about to fire it and then fires exactly once."""

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
from tests.support.orders import adjustment, location, order, product
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e

QUICK = "quickpay"
"""A channel whose pending orders keep their stock 3 seconds."""
PATIENT = "patientpay"
"""A channel whose pending orders keep their stock 10 minutes (longer than any of these tests)."""


@pytest.fixture(scope="module")
async def pay(e2e_infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveFleet]:
    """The fleet with a channels file of two more channels: their own reservation deadlines."""
    packaged = yaml.safe_load(Path("libs/policy/channels.yaml").read_text())
    packaged["channels"] |= {
        QUICK: {"payment": {"reservation_minutes": 0.05}},
        PATIENT: {"payment": {"reservation_minutes": 10}},
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


async def test_an_authorized_payment_sends_the_reserved_order_to_fulfillment(pay: LiveFleet) -> None:
    item = await stocked(pay, "PAYOK", 1)
    placed = order(channel=PATIENT, lines=[(item, 1, "10.00")], payment_status="pending")
    external_id = await pay.submit(placed)
    waiting = await pay.wait_status(external_id, "awaiting_payment")
    assert [r["code"] for r in waiting["reasons"]] == ["awaiting_payment"]
    assert [line["quantity"] for s in waiting["shipments"] for line in s["lines"]] == [1]
    await payment(pay, f"evt-{external_id}-1", placed, "authorized")
    await pay.wait_status(external_id, "in_fulfillment")
    assert statuses(pay, external_id)[:5] == [
        "received",
        "validated",
        "awaiting_payment",
        "allocated",
        "in_fulfillment",
    ]


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
