"""Status API keys: stored as digests, scoped to channels, limited per key, revoked for good."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from libs.contracts.notification import ApiKeyChanged
from libs.platform.records import Rejected
from services.notification.adapters.http_api import OPENAPI, build_api
from services.notification.app.use_cases import change_api_key
from services.notification.domain.api_keys import (
    ApiKey,
    RateLimiter,
    TokenBucket,
    bearer_token,
    digest,
    new_key,
    retry_after,
)
from tests.unit.fakes.notification import FakeNotificationStore

pytestmark = pytest.mark.unit


def test_a_new_key_has_256_random_bits_and_only_its_sha256_is_kept() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100 and all(k.startswith("baton_") and len(k) >= 6 + 43 for k in keys)
    key = next(iter(keys))
    assert len(digest(key)) == 64 and digest(key) == digest(key) and key not in digest(key)


@pytest.mark.parametrize(
    "header,token",
    [
        ("Bearer abc", "abc"),
        ("bearer   abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer a b", None),
        ("", None),
        (None, None),
    ],
)
def test_the_key_is_read_from_a_bearer_authorization_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_a_key_reads_only_its_own_channels_or_all_with_a_star() -> None:
    web = ApiKey("k", frozenset({"webshop", "pos"}))
    assert web.may_read("webshop") and web.may_read("pos") and not web.may_read("marketplace")
    assert ApiKey("s", frozenset({"*"})).may_read("anything")


def test_a_token_bucket_allows_a_burst_then_one_request_per_refill() -> None:
    bucket = TokenBucket(rate_per_s=2, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0
    assert bucket.take(0.5) > 0
    assert retry_after(0.01) == "1" and retry_after(1.2) == "2"


def test_the_rate_limiter_keeps_a_bounded_number_of_buckets_forgetting_idle_ones_first() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=2, max_buckets=10)
    for n in range(100):
        limiter.take(f"client:{n}", float(n))
    assert len(limiter) <= 10
    limiter.take("busy", 100.0)
    limiter.take("busy", 100.0)
    assert limiter.waiting("busy", 100.0) == pytest.approx(1.0)
    assert limiter.waiting("never-seen", 100.0) == 0
    assert limiter.waiting("busy", 100.0) == pytest.approx(1.0), "looking does not take"


async def test_adding_and_revoking_a_key_keeps_only_its_digest_and_a_revoked_id_never_returns() -> None:
    store = FakeNotificationStore()
    key = new_key()
    add = ApiKeyChanged(action="add", key_id="k1", name="desk", key_hash=digest(key), channels=["webshop"])
    await change_api_key(add, store.unit())
    assert store.api_keys["k1"].digest == digest(key) and store.api_keys["k1"].channels == ("webshop",)
    await change_api_key(ApiKeyChanged(action="revoke", key_id="k1"), store.unit())
    await change_api_key(add, store.unit())  # a replayed add
    assert store.api_keys["k1"].revoked
    with pytest.raises(Rejected) as unknown:
        await change_api_key(ApiKeyChanged(action="revoke", key_id="never"), store.unit())
    assert unknown.value.cause == "unknown_api_key"


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "add", "key_id": "k", "channels": ["webshop"]},
        {"action": "add", "key_id": "k", "key_hash": "ab" * 32},
        {"action": "add", "key_id": "k", "key_hash": "ab" * 32, "channels": ["web shop"]},
        {"action": "add", "key_id": "k", "key_hash": "not-hex", "channels": ["webshop"]},
        {"action": "add", "key_id": "k/../x", "key_hash": "ab" * 32, "channels": ["webshop"]},
    ],
)
def test_a_key_command_without_a_digest_or_with_bad_channels_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ApiKeyChanged.model_validate(fields)


class FakeQueries:
    """The status API's reads over a dict of orders and a dict of keys (digest -> key)."""

    def __init__(self, orders: dict[UUID, dict[str, Any]], keys: dict[str, ApiKey]) -> None:
        self.orders = orders
        self.keys = keys
        self.key_lookups = 0

    async def order(self, order_id: UUID) -> dict[str, Any] | None:
        return self.orders.get(order_id)

    async def find(self, channel: str, external_id: str) -> UUID | None:
        return next(
            (i for i, o in self.orders.items() if (o["channel"], o["external_id"]) == (channel, external_id)),
            None,
        )

    async def api_key(self, key_digest: str) -> ApiKey | None:
        self.key_lookups += 1
        return self.keys.get(key_digest)

    async def ready(self) -> bool:
        return True


async def test_the_api_answers_401_without_a_key_404_outside_its_channels_and_429_over_its_rate() -> None:
    order_id = uuid4()
    queries = FakeQueries(
        {order_id: {"order_id": str(order_id), "channel": "pos", "external_id": "E1"}},
        {
            digest("web-key"): ApiKey("web", frozenset({"webshop"})),
            digest("pos-key"): ApiKey("pos", frozenset({"pos"})),
        },
    )
    now = [0.0]
    app = build_api(queries, rate_per_s=1, burst=2, clock=lambda: now[0])
    async with TestClient(TestServer(app)) as client:

        async def status(path: str, key: str | None = None) -> int:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            async with client.get(path, headers=headers) as response:
                return response.status

        assert await status(f"/orders/{order_id}") == 401
        assert await status(f"/orders/{order_id}", "pos-key") == 200
        assert await status(f"/orders/{order_id}", "web-key") == 404
        assert await status("/orders?channel=pos&external_id=E1", "web-key") == 404
        assert await status("/orders?channel=pos&external_id=E1", "pos-key") == 200
        async with client.get(f"/orders/{order_id}", headers={"Authorization": "Bearer pos-key"}) as limited:
            assert limited.status == 429 and limited.headers["Retry-After"] == "1"
        lookups = queries.key_lookups
        assert await status(f"/orders/{order_id}", "pos-key") == 429
        assert queries.key_lookups == lookups, "a key over its limit costs no look-up"
        now[0] += 1.0
        assert await status(f"/orders/{order_id}", "pos-key") == 200
        for open_path in ("/livez", "/readyz", "/openapi.json"):
            assert await status(open_path) == 200


def test_the_openapi_document_declares_the_bearer_scheme_and_the_refusals() -> None:
    assert OPENAPI["components"]["securitySchemes"]["bearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": OPENAPI["components"]["securitySchemes"]["bearerKey"]["description"],
    }
    assert OPENAPI["security"] == [{"bearerKey": []}]
    for path in ("/orders/{order_id}", "/orders"):
        responses = OPENAPI["paths"][path]["get"]["responses"]
        assert {"200", "401", "404", "429"} <= responses.keys()
        assert "Retry-After" in responses["429"]["headers"]
    for path in ("/livez", "/readyz", "/openapi.json"):
        assert OPENAPI["paths"][path]["get"]["security"] == []
