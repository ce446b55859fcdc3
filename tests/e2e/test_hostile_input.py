"""Hostile input at the edges, end to end on the real fleet: text that cannot break anything, one
recipient per e-mail, and a status API that answers only holders of a key for the order's channel."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any
from uuid import UUID

import aiohttp
import pytest

from libs.contracts import topics
from tests.e2e.conftest import LiveFleet
from tests.support.orders import order

pytestmark = pytest.mark.e2e

EVIL = "evil.example"


def with_customer(payload: dict[str, Any], **customer: str) -> dict[str, Any]:
    return payload | {"customer": payload["customer"] | customer}


async def test_hostile_customer_text_is_refused_while_a_hundred_other_orders_emails_are_all_delivered(
    live: LiveFleet,
) -> None:
    run = secrets.token_hex(3)
    good = [order(f"good-{run}-{n}", lines=[(f"NOPE-{run}", 1, "10.00")]) for n in range(100)]
    dead_lettered = {
        # external id -> the field the dead letter must name
        f"crlf-name-{run}": "customer.name",
        f"lsep-name-{run}": "customer.name",
        f"crlf-email-{run}": "customer.email",
        f"nul-id-{run}": "external_id",
    }
    hostile = [
        with_customer(order(f"crlf-name-{run}"), name=f"Ada\r\nBcc: victim@{EVIL}"),
        with_customer(order(f"lsep-name-{run}"), name="Ada\u2028Subject: you won"),
        with_customer(order(f"crlf-email-{run}"), email=f"ada@example.com\r\nBcc: list@{EVIL}"),
        order(f"nul-id-{run}") | {"external_id": f"nul-id-{run}\x00"},
        with_customer(order(f"list-email-{run}"), email=f"victim@example.com, list@{EVIL}, more@{EVIL}"),
    ]
    batch = list(good)
    for i, bad in enumerate(hostile):  # spread among the good ones, all in flight together
        batch.insert(i * 25, bad)
    await live.publisher.send_many(
        topics.ORDERS_SUBMITTED, [(f"{o['channel']}:{o['external_id']}", o) for o in batch]
    )

    # A list of addresses is a customer's mistake: the order is rejected, with the reason.
    rejected = await live.wait_status(f"list-email-{run}", "rejected", timeout=120)
    assert "invalid_email" in [r["code"] for r in rejected["reasons"]]

    # Control characters are no order at all: dead letters naming the field.
    def letters() -> dict[str, tuple[str, str]]:
        found = {}
        for record in live.dead_letters.raw:
            headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
            for external_id in dead_lettered:
                if external_id.encode() in record.value:
                    found[external_id] = (headers["dlq-cause"], headers["dlq-error"])
        return found

    await live.dead_letters.wait_for(
        lambda _: letters().keys() == dead_lettered.keys(), 120, "4 dead letters"
    )
    for external_id, field in dead_lettered.items():
        cause, error = letters()[external_id]
        assert cause == "schema_violation" and f"{field}:" in error, (external_id, error)

    # Every good order's e-mail arrives, once, to its one customer; nothing goes to the attacker.
    wanted = {f"We received your order {o['external_id']}" for o in good}
    deadline = time.monotonic() + 180
    while True:
        subjects = [str(m["Subject"]) for m in live.mailbox.messages]
        if wanted <= set(subjects) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert len(wanted - set(subjects)) == 0, f"{len(wanted - set(subjects))} of 100 e-mails missing"
    assert sorted(s for s in subjects if s in wanted) == sorted(wanted), "one e-mail per order"
    assert all(len(rcpt) == 1 for rcpt in live.mailbox.envelopes)
    assert not [r for rcpt in live.mailbox.envelopes for r in rcpt if EVIL in r]
    assert not [s for s in subjects if run in s and "good" not in s]
    # The rejected order's `received` e-mail was due first: never sent, given up at once.
    list_order = await live.wait_row(
        "SELECT order_id FROM notification.customers WHERE external_id = $1", f"list-email-{run}"
    )
    state, error = await live.wait_row(
        "SELECT (state, last_error) FROM notification.emails WHERE order_id = $1 AND state <> 'pending'",
        list_order,
        what="the hostile e-mail given up",
    )
    assert state == "dead" and "not one valid address" in error


async def test_the_status_api_needs_a_key_for_the_orders_channel_limits_it_and_honours_revocation(
    live: LiveFleet,
) -> None:
    run = secrets.token_hex(3)
    channel_a, channel_b = f"shopa{run}", f"shopb{run}"
    ext_a = await live.submit(order(f"api-a-{run}", channel=channel_a))
    ext_b = await live.submit(order(f"api-b-{run}", channel=channel_b))
    order_a = (await live.wait_status(ext_a, "received"))["order_id"]
    order_b = (await live.wait_status(ext_b, "received"))["order_id"]
    for order_id in (order_a, order_b):
        await live.wait_row(
            "SELECT true FROM notification.order_views WHERE order_id = $1", UUID(order_id), what="read model"
        )
    key_a_id, key_a = await live.api_key(channel_a, name="shop A")
    _, key_b = await live.api_key(channel_b, name="shop B")

    async with aiohttp.ClientSession(live.api) as http:

        async def get(path: str, key: str | None = None, **params: str) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            async with http.get(path, headers=headers, params=params) as response:
                return response.status, response.headers

        # No key: 401, with the scheme named.
        status, headers = await get(f"/orders/{order_a}")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert (await get(f"/orders/{order_a}", "baton_made-up"))[0] == 401
        assert (await get("/openapi.json"))[0] == 200

        # A key reads its channel's orders; another channel's order is not found, not forbidden.
        assert (await get(f"/orders/{order_a}", key_a))[0] == 200
        assert (await get(f"/orders/{order_b}", key_a))[0] == 404
        assert (await get("/orders", key_a, channel=channel_b, external_id=ext_b))[0] == 404
        assert (await get("/orders", key_b, channel=channel_b, external_id=ext_b))[0] == 200

        # Over its rate: 429 with Retry-After (key B's bucket; key A is unaffected).
        answers = await asyncio.gather(
            *(get("/orders", key_b, channel=channel_a, external_id="x") for _ in range(300))
        )
        limited = [h for s, h in answers if s == 429]
        assert limited, f"no 429 among {sorted({s for s, _ in answers})}"
        assert {s for s, _ in answers} <= {404, 429}
        assert all(int(h["Retry-After"]) >= 1 for h in limited)
        assert (await get(f"/orders/{order_a}", key_a))[0] == 200

        # Revoked: refused as soon as notification applied the command.
        await live.baton("api-keys", "revoke", key_a_id)
        deadline = time.monotonic() + 60
        while (status := (await get(f"/orders/{order_a}", key_a))[0]) != 401 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert status == 401

    listed = (await live.baton("api-keys", "list")).stdout
    line = next(line for line in listed.splitlines() if line.startswith(key_a_id))
    assert "revoked" in line and channel_a in line
    assert key_a not in listed and key_b not in listed
    digest = await live.fetchval("SELECT key_hash FROM notification.api_keys WHERE key_id = $1", key_a_id)
    assert digest not in listed, "nor its digest"
