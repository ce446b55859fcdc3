"""A carrier's ETA end to end: it replaces Baton's estimate, the order's status is re-published
with it, and the e-mails that mention delivery say when. Through public topics only."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from tests.e2e.conftest import LiveFleet
from tests.support.orders import adjustment, location, order, product
from tests.support.orders import unique_sku as sku

pytestmark = pytest.mark.e2e


async def test_a_carriers_eta_replaces_the_estimate_and_the_shipped_email_gives_the_date(
    live: LiveFleet,
) -> None:
    item = sku("PARCEL")
    wh = f"wh-{item}"
    await live.seed(
        products=[product(item)],
        locations=[location(wh, lat=52.4, lon=13.1)],
        adjustments=[adjustment(f"i-{item}", item, wh, delta=2)],
    )
    external_id = await live.submit(order(lines=[(item, 1, "10.00")]))
    placed = await live.wait_status(external_id, "in_fulfillment")
    [shipment] = placed["shipments"]
    promised = datetime(2026, 12, 4, 14, 0, tzinfo=UTC)
    await live.move(shipment["shipment_id"], "shipped", carrier="DHL", tracking_number="JD0003")
    shipped = await live.wait_status(external_id, "shipped")
    assert shipped["eta"] != promised.isoformat().replace("+00:00", "Z")

    await live.move(shipment["shipment_id"], "shipped", update_id=f"{item}:eta", eta=promised)

    def revised() -> list[dict[str, object]]:
        return [r for r in live.history(external_id) if r["version"] > shipped["version"]]

    await live.status.wait_for(lambda _: bool(revised()), 60, "the status with the carrier's ETA")
    [again] = revised()
    assert again["status"] == "shipped"
    assert datetime.fromisoformat(str(again["eta"])) == promised

    def shipped_mail() -> str | None:
        for m in live.mailbox.messages:
            if external_id in str(m["Subject"]) and "on its way" in str(m["Subject"]):
                assert isinstance(m, EmailMessage)  # the default policy parses into EmailMessage
                return str(m.get_content())
        return None

    deadline = time.monotonic() + 60
    while shipped_mail() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    body = shipped_mail()
    assert body is not None and "Expected delivery: " in body and "JD0003" in body
    estimate = datetime.fromisoformat(str(shipped["eta"]))
    assert f"Expected delivery: {estimate:%A, %d %B %Y}" in body
    assert [r["status"] for r in live.history(external_id)].count("shipped") == 2
    live.fleet.assert_alive()
