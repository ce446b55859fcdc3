"""The fulfillment board in real Chromium against the running fleet: live cards, actions published as
the public commands, roles, keyboard use and axe-core.

Screenshots go to ``BATON_SCREENSHOTS_DIR`` when it is set (the README's come from
``BATON_SCREENSHOTS_DIR=docs/screenshots``), otherwise to the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import pytest
from aiohttp import web
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from libs.contracts import topics
from tests.e2e.conftest import SLA_CHANNEL, LiveFleet
from tests.support.browser import Browser, chromium_paths
from tests.support.infra import free_port
from tests.support.orders import adjustment, location, order, product

pytestmark = pytest.mark.browser

BOARD_LATENCY_S = 5.0
"""The issue's promise: a shipment that entered `new` is on an open board within 5 s, no reload —
counted from the moment notification's read model has it (how soon notification consumes a public
event is the consumer's lag, which a fleet just started, still joining its groups, can stretch)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    paths = chromium_paths()
    if paths is None:
        pytest.fail("Chromium and chromedriver are missing: `make install` installs Debian's chromium-driver")
    chromium = Browser(*paths)
    try:
        yield chromium
    finally:
        chromium.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("BATON_SCREENSHOTS_DIR") or tmp_path)


async def run(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def stocked_item(live: LiveFleet, name: str, price: str = "10.00", units: int = 20) -> str:
    item = f"{name}-{secrets.token_hex(3)}"
    await live.seed(
        products=[product(item, price)],
        locations=[location(f"wh-{item}")],
        adjustments=[adjustment(f"i-{item}", item, f"wh-{item}", delta=units)],
    )
    return item


def entered(live: LiveFleet, order_id: str, stage: str) -> bool:
    return any(
        r.get("order_id") == order_id and r.get("entered_stage") == stage and r.get("change") != "left"
        for r in live.stages.records
    )


async def known_to_notification(live: LiveFleet, order_id: str, stage: str) -> None:
    await live.wait_row(
        "SELECT true FROM notification.shipment_stages s JOIN notification.order_views v USING (order_id)"
        " WHERE s.order_id = $1 AND s.stage = $2 AND jsonb_array_length(v.shipments) > 0",
        UUID(order_id),
        stage,
        what=f"notification's read model to have {order_id} in {stage}",
    )


def card(external_id: str, stage: str) -> str:
    return f'section[data-stage="{stage}"] li.card[data-external-id="{external_id}"]'


async def test_an_order_appears_in_new_without_a_reload_and_moving_its_card_to_packed_publishes_the_update(
    live: LiveFleet, browser: Browser, shots: Path
) -> None:
    item = await stocked_item(live, "BOARD")
    key_id, key = await live.api_key("*", name="desk", role="operator")
    await run(browser.fresh)
    await run(browser.log_in, live.api, key)
    assert "Fulfillment board: standard" in browser.driver.find_element(By.TAG_NAME, "h1").text
    browser.script("window.__sameDocument = true")  # gone if the page were loaded again

    external_id = await live.submit(order(lines=[(item, 2, "10.00")]))
    allocated = await live.wait_status(external_id, "allocated")
    order_id, shipment_id = allocated["order_id"], allocated["shipments"][0]["shipment_id"]
    await live.stages.wait_for(lambda _: entered(live, order_id, "new"), 60, f"{external_id} to enter new")
    await known_to_notification(live, order_id, "new")

    await run(browser.wait_css, card(external_id, "new"), BOARD_LATENCY_S)
    assert browser.script("return window.__sameDocument === true"), "the board reloaded"
    shown = browser.on(card(external_id, "new"), lambda element: element.text)
    assert f"{item} \u00d7 2" in shown and "webshop" in shown
    browser.screenshot(shots / "board.png")

    def move_to_packed(element: WebElement) -> None:
        """Keyboard only: the stage chosen in the card's select, Enter on its button."""
        Select(element.find_element(By.TAG_NAME, "select")).select_by_visible_text("packed")
        element.find_element(By.CSS_SELECTOR, "button[type=submit]").send_keys(Keys.ENTER)

    await run(browser.on, card(external_id, "new"), move_to_packed)
    await run(browser.wait_css, '#flash [data-outcome="ok"]', 20)

    def moved_to_packed(records: list[dict[str, Any]]) -> bool:
        return any(
            r.get("shipment_id") == shipment_id
            and r.get("left_stage") == "new"
            and r.get("entered_stage") == "packed"
            for r in records
        )

    await live.stages.wait_for(moved_to_packed, 60, "the stage event new -> packed")

    # The order's status is fulfillment's to publish: in_fulfillment, its parcel now packed.
    await live.wait_status(external_id, "in_fulfillment")
    await run(browser.wait_css, card(external_id, "packed"), 20)
    assert browser.css(card(external_id, "new")) == []
    recorded = await live.fetchval(
        "SELECT key_id FROM notification.operator_actions WHERE action = 'move' AND subject = $1", shipment_id
    )
    assert recorded == key_id

    # The order page: status, the shipment's stage, the whole timeline with the board's action.
    await run(browser.open, f"{live.api}/board/orders?channel=webshop&external_id={external_id}")
    await run(browser.wait_css, f'tr[data-shipment="{shipment_id}"] td[data-stage="packed"]', 20)
    assert browser.css('dd[data-status="in_fulfillment"]')
    timeline = browser.driver.find_element(By.CSS_SELECTOR, "ol.timeline").text
    assert "status received (version 1)" in timeline and "new → packed" in timeline
    assert f"move {shipment_id} by desk ({key_id})" in timeline
    browser.screenshot(shots / "order.png")

    # The open order page follows the order live: the carrier's update, no reload.
    browser.script("window.__sameDocument = true")
    await live.move(shipment_id, "shipped", carrier="DHL", tracking_number=f"T-{item}")
    await live.wait_status(external_id, "shipped")
    await run(browser.wait_css, f'tr[data-shipment="{shipment_id}"] td[data-stage="shipped"]', 20)
    await run(browser.wait_css, 'dd[data-status="shipped"]', 20)
    assert browser.script("return window.__sameDocument === true"), "the order page reloaded"
    assert "packed → shipped" in browser.driver.find_element(By.CSS_SELECTOR, "ol.timeline").text


async def test_releasing_a_held_order_on_the_board_makes_it_allocated(
    live: LiveFleet, browser: Browser
) -> None:
    item = await stocked_item(live, "HELD", price="1500.00", units=3)
    key_id, key = await live.api_key("webshop", name="support", role="operator")
    external_id = await live.submit(order(lines=[(item, 1, "1500.00")]))
    held = await live.wait_status(external_id, "on_hold")

    await run(browser.fresh)
    await run(browser.log_in, live.api, key)
    await run(browser.open, f"{live.api}/board/held")
    row = await run(browser.wait_css, f'tr[data-external-id="{external_id}"]', 20)
    assert int(browser.css("h1 .count")[0].get_attribute("data-total") or 0) >= 1
    row.find_element(By.CSS_SELECTOR, f'button[aria-label="Release {external_id}"]').send_keys(Keys.ENTER)
    await run(browser.wait_css, '#flash [data-outcome="ok"]', 20)

    await live.wait_status(external_id, "allocated")
    decided_by = await live.fetchval(
        "SELECT key_id FROM notification.operator_actions WHERE action = 'release' AND order_id = $1",
        UUID(held["order_id"]),
    )
    assert decided_by == key_id


async def test_a_viewer_sees_the_board_without_actions_and_the_api_refuses_its_actions(
    live: LiveFleet, browser: Browser
) -> None:
    item = await stocked_item(live, "VIEW")
    _, viewer = await live.api_key("webshop", name="wallboard")
    external_id = await live.submit(order(lines=[(item, 1, "10.00")]))
    allocated = await live.wait_status(external_id, "allocated")
    order_id, shipment_id = allocated["order_id"], allocated["shipments"][0]["shipment_id"]
    await live.stages.wait_for(lambda _: entered(live, order_id, "new"), 60, f"{external_id} to enter new")

    await run(browser.fresh)
    await run(browser.log_in, live.api, viewer)
    controls = await run(
        browser.on,
        card(external_id, "new"),
        lambda element: len(element.find_elements(By.CSS_SELECTOR, "form, button, select")),
    )
    assert controls == 0
    assert browser.css('[data-role="viewer"]')

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {viewer}"}) as http:
        async with http.post(f"{live.api}/board/shipments/{shipment_id}/move", data={"stage": "packed"}) as r:
            assert r.status == 403
        async with http.post(f"{live.api}/board/orders/{order_id}/cancel", data={}) as r:
            assert r.status == 403
    move = f"{live.api}/board/shipments/{shipment_id}/move"
    async with aiohttp.ClientSession() as http, http.post(move, data={"stage": "packed"}) as r:
        assert r.status == 401  # no key at all
    assert (
        await live.fetchval(
            "SELECT count(*) FROM notification.operator_actions WHERE subject = $1", shipment_id
        )
        == 0
    )


async def test_the_pages_are_keyboard_reachable_and_axe_finds_no_serious_violation(
    live: LiveFleet, browser: Browser
) -> None:
    item = await stocked_item(live, "AXE")
    _, key = await live.api_key("*", name="a11y", role="operator")
    external_id = await live.submit(order(lines=[(item, 1, "10.00")]))
    allocated = await live.wait_status(external_id, "allocated")
    await run(browser.fresh)
    await run(browser.log_in, live.api, key)
    await run(browser.wait_css, card(external_id, "new"), 30)

    # The first Tab reaches the skip link, which leads to the main content.
    browser.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.script("return document.activeElement.className") == "skip"

    pages = ["/board", f"/board/orders/{allocated['order_id']}", "/board/held", "/board/dead-letters"]
    found: dict[str, list[dict[str, Any]]] = {}
    for page in pages:
        await run(browser.open, f"{live.api}{page}")
        await run(browser.wait_css, "main h1", 20)
        found[page] = await run(browser.axe_violations)
    await run(browser.open, f"{live.api}/board/login")
    found["/board/login"] = await run(browser.axe_violations)
    assert found == {page: [] for page in found}


async def test_dead_letters_are_listed_with_counts_and_a_dead_webhook_is_redelivered_from_the_board(
    live: LiveFleet, browser: Browser, shots: Path
) -> None:
    run_id = secrets.token_hex(3)
    recovered = asyncio.Event()
    attempts: list[int] = []

    async def endpoint(request: web.Request) -> web.Response:
        attempts.append(1)
        return web.Response(status=204 if recovered.is_set() else 500)

    app = web.Application()
    app.add_routes([web.post("/hook", endpoint)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    subscription = f"board-{run_id}"
    try:
        await live.baton(
            "webhooks",
            "add",
            "--url",
            f"http://127.0.0.1:{port}/hook",
            "--events",
            "order.received",
            "--subscription-id",
            subscription,
        )
        await live.wait_row(
            "SELECT true FROM notification.subscriptions WHERE subscription_id = $1",
            subscription,
            what=subscription,
        )
        item = await stocked_item(live, "DEAD")
        await live.submit(order(lines=[(item, 1, "10.00")]))
        delivery_id = await live.wait_row(
            "SELECT delivery_id FROM notification.deliveries WHERE subscription_id = $1 AND status = 'dead'",
            subscription,
            what="the delivery to the failing endpoint to be dead",
        )
        # A record intake cannot apply: dead-lettered with its cause.
        bad_key = f"webshop:bad-{run_id}"
        await live.publisher.send(topics.ORDERS_SUBMITTED, bad_key, b"{not json")
        await live.dead_letters.wait_for(
            lambda _: any(r.key == bad_key.encode() for r in live.dead_letters.raw),
            60,
            "intake to dead-letter the bad record",
        )

        _, key = await live.api_key("*", name="ops", role="operator")
        await run(browser.fresh)
        await run(browser.log_in, live.api, key)
        await run(browser.open, f"{live.api}/board/dead-letters")
        await run(browser.wait_css, 'li[data-service="intake"]', 30)
        intake_count = browser.css('li[data-service="intake"] strong')[0].text
        assert int(intake_count) >= 1
        assert int(browser.css("#webhooks .count")[0].get_attribute("data-total") or 0) >= 1
        assert await run(browser.axe_violations) == [], "the filled lists pass axe-core too"
        browser.screenshot(shots / "dead-letters.png")

        recovered.set()
        button = browser.driver.find_element(By.CSS_SELECTOR, f'button[aria-label="Redeliver {delivery_id}"]')
        button.send_keys(Keys.ENTER)
        await run(browser.wait_css, '#flash [data-outcome="ok"]', 20)
        await live.wait_row(
            "SELECT true FROM notification.deliveries WHERE delivery_id = $1 AND status = 'delivered'",
            delivery_id,
            what=f"{delivery_id} redelivered",
        )
        assert (
            await live.fetchval(
                "SELECT count(*) FROM notification.operator_actions WHERE action = 'redeliver' AND subject = $1",
                delivery_id,
            )
            == 1
        )
    finally:
        await live.baton("webhooks", "remove", subscription)
        await runner.cleanup()


async def test_a_card_past_its_stages_deadline_turns_late_on_an_open_board(
    live: LiveFleet, browser: Browser
) -> None:
    """The e2e pipeline `sla-e2e` gives `new` a deadline of seconds; the breach fulfillment reports
    re-publishes the order's ETA, so an open board refreshes and shows the card late."""
    item = await stocked_item(live, "SLA")
    _, key = await live.api_key("*", name="sla", role="viewer")
    await run(browser.fresh)
    await run(browser.log_in, live.api, key)
    await run(browser.open, f"{live.api}/board?pipeline=sla-e2e")
    await run(browser.wait_css, 'section[data-stage="new"]', 20)
    browser.script("window.__sameDocument = true")

    external_id = await live.submit(order(lines=[(item, 1, "10.00")], channel=SLA_CHANNEL))
    late = await run(browser.on, f'{card(external_id, "new")} .sla[data-sla="late"]', lambda e: e.text, 60)
    assert "Late" in late
    assert browser.script("return window.__sameDocument === true"), "the board reloaded"
