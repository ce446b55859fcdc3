"""The fulfillment board: its rules, its actions as public commands, roles, and its HTTP guard."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiohttp.test_utils import TestClient, TestServer

from libs.contracts.fulfillment import FulfillmentUpdate
from libs.contracts.notification import ApiKeyChanged, RedeliveryRequested
from libs.contracts.orders import CancelRequested, HoldDecision, ShipmentLine
from services.notification.adapters.board_web import COOKIE, Board, load_pipelines
from services.notification.adapters.http_api import build_api
from services.notification.app.board import (
    ActionRefused,
    OperatorAction,
    OrderSummary,
    ShipmentPlace,
    cancel_order,
    decide_hold,
    move_shipment,
    redeliver_webhook,
)
from services.notification.app.use_cases import change_api_key
from services.notification.domain.api_keys import ApiKey, digest
from services.notification.domain.board import Card, Pipeline, age, columns, may_move, pipelines_of
from tests.unit.fakes.notification import FakeNotificationStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
STANDARD = Pipeline("standard", ("new", "picking", "packed", "shipped", "delivered"))
OPERATOR = ApiKey("op", frozenset({"*"}), "operator", "desk")
WEB_OPERATOR = ApiKey("web-op", frozenset({"webshop"}), "operator")
VIEWER = ApiKey("wall", frozenset({"*"}), "viewer")


def test_columns_follow_the_pipeline_with_the_longest_waiting_card_first() -> None:
    old = Card("s1", "o1", "webshop", "E1", "in_fulfillment", "new", [], NOW - timedelta(hours=2))
    young = Card("s2", "o2", "webshop", "E2", "in_fulfillment", "new", [], NOW)
    packed = Card("s3", "o3", "pos", "E3", "in_fulfillment", "packed", [], NOW)
    stray = Card("s4", "o4", "pos", "E4", "in_fulfillment", "failed", [], NOW)
    board = columns(STANDARD, [young, packed, old, stray])
    assert [stage for stage, _ in board] == list(STANDARD.stages)
    assert dict(board)["new"] == [old, young] and dict(board)["packed"] == [packed]
    assert sum(len(cards) for _, cards in board) == 3


def test_a_parcel_moves_only_forward_within_its_pipeline() -> None:
    assert STANDARD.later_stages("picking") == ("packed", "shipped", "delivered")
    assert STANDARD.later_stages("delivered") == () and STANDARD.later_stages("accepted") == ()
    assert may_move(STANDARD, "new", "packed") is None
    assert "not a later stage" in str(may_move(STANDARD, "packed", "new"))
    assert "not a later stage" in str(may_move(STANDARD, "packed", "packed"))
    assert may_move(STANDARD, None, "packed") is not None


@pytest.mark.parametrize(
    "seconds,shown", [(5, "5s"), (125, "2m"), (3 * 3600 + 5 * 60, "3h 05m"), (50 * 3600, "2d 2h"), (-3, "0s")]
)
def test_the_age_in_stage_reads_as_people_say_it(seconds: int, shown: str) -> None:
    assert age(NOW - timedelta(seconds=seconds), NOW) == shown


def test_the_board_reads_fulfillments_packaged_pipelines_standard_first() -> None:
    pipelines = load_pipelines(None)
    assert pipelines[0].name == "standard" and {"express", "dropship"} <= {p.name for p in pipelines}
    assert pipelines_of({"pipelines": [{"name": "x", "stages": [{"name": "a"}, {"name": "b"}]}]}) == (
        Pipeline("x", ("a", "b")),
    )


class FakeBoard:
    """The board's reads and the actions it published, in memory."""

    def __init__(self) -> None:
        self.shipments: dict[str, ShipmentPlace] = {}
        self.orders: dict[UUID, OrderSummary] = {}
        self.published: list[OperatorAction] = []
        self.cards_shown: list[Card] = []

    async def cards(self, pipeline: str, last_stage: str | None = None) -> list[Card]:
        return self.cards_shown

    async def shipment(self, shipment_id: str) -> ShipmentPlace | None:
        return self.shipments.get(shipment_id)

    async def summary(self, order_id: UUID) -> OrderSummary | None:
        return self.orders.get(order_id)

    async def held(self, channels: frozenset[str] | None) -> tuple[int, list[dict[str, Any]]]:
        return 0, []

    async def dead_deliveries(self) -> tuple[int, list[dict[str, Any]]]:
        return 0, []

    async def order_activity(self, order_id: UUID) -> dict[str, list[dict[str, Any]]]:
        return {"webhooks": [], "emails": [], "actions": []}

    async def publish(self, action: OperatorAction) -> None:
        self.published.append(action)


def a_board(status: str = "in_fulfillment", channel: str = "webshop") -> tuple[FakeBoard, UUID]:
    board = FakeBoard()
    order_id = uuid4()
    board.orders[order_id] = OrderSummary(order_id, channel, "E1", status)
    board.shipments["s1"] = ShipmentPlace("s1", order_id, channel, "standard", "new")
    return board, order_id


async def test_moving_a_card_publishes_a_fulfillment_update_signed_with_the_key() -> None:
    board, order_id = a_board()
    done = await move_shipment(OPERATOR, "s1", "packed", {"standard": STANDARD}, board, board, NOW)
    command = done.command
    assert isinstance(command, FulfillmentUpdate)
    assert (command.shipment_id, command.stage, command.occurred_at) == ("s1", "packed", NOW)
    assert command.note == "moved on the board by desk (op)"
    assert board.published == [done] and (done.key_id, done.order_id, done.action) == ("op", order_id, "move")


async def test_a_move_backwards_by_a_viewer_or_outside_the_keys_channels_publishes_nothing() -> None:
    board, _ = a_board(channel="pos")
    pipelines = {"standard": STANDARD}
    with pytest.raises(ActionRefused) as viewer:
        await move_shipment(VIEWER, "s1", "packed", pipelines, board, board, NOW)
    with pytest.raises(ActionRefused) as other_channel:
        await move_shipment(WEB_OPERATOR, "s1", "packed", pipelines, board, board, NOW)
    board.shipments["s1"] = ShipmentPlace("s1", uuid4(), "pos", "standard", "packed")
    with pytest.raises(ActionRefused) as backwards:
        await move_shipment(OPERATOR, "s1", "new", pipelines, board, board, NOW)
    assert (viewer.value.status, other_channel.value.status, backwards.value.status) == (403, 404, 409)
    assert board.published == []


async def test_only_an_order_on_hold_is_released_or_rejected_as_a_hold_decision() -> None:
    board, order_id = a_board(status="on_hold")
    done = await decide_hold(OPERATOR, order_id, "release", "checked", board, board)
    assert isinstance(done.command, HoldDecision)
    assert (done.command.decision, done.command.decided_by, done.command.reason) == (
        "release",
        "desk (op)",
        "checked",
    )
    assert done.command.decision_id is not None
    board.orders[order_id] = OrderSummary(order_id, "webshop", "E1", "allocated")
    with pytest.raises(ActionRefused, match="not on hold"):
        await decide_hold(OPERATOR, order_id, "reject", "", board, board)
    assert len(board.published) == 1


async def test_cancelling_publishes_a_cancel_request_for_the_order_or_its_lines() -> None:
    board, order_id = a_board()
    whole = await cancel_order(OPERATOR, order_id, None, "", board, board)
    some = await cancel_order(
        OPERATOR, order_id, [ShipmentLine(sku="A", quantity=1)], "damaged", board, board
    )
    assert isinstance(whole.command, CancelRequested) and isinstance(some.command, CancelRequested)
    assert whole.command.lines is None and whole.command.reason == "cancelled on the board by desk (op)"
    assert some.command.lines == [ShipmentLine(sku="A", quantity=1)] and some.command.reason == "damaged"
    assert whole.command.request_id != some.command.request_id


async def test_only_an_operator_key_for_every_channel_redelivers_a_webhook() -> None:
    board = FakeBoard()
    done = await redeliver_webhook(OPERATOR, "d1", board)
    assert done.command == RedeliveryRequested(delivery_id="d1")
    for key in (VIEWER, WEB_OPERATOR):
        with pytest.raises(ActionRefused) as refused:
            await redeliver_webhook(key, "d1", board)
        assert refused.value.status == 403
    assert len(board.published) == 1


async def test_a_key_is_a_viewer_unless_made_an_operator() -> None:
    store = FakeNotificationStore()
    base = {"action": "add", "key_hash": digest("k"), "channels": ["*"]}
    await change_api_key(ApiKeyChanged.model_validate(base | {"key_id": "k1"}), store.unit())
    await change_api_key(
        ApiKeyChanged.model_validate(base | {"key_id": "k2", "key_hash": digest("k2"), "role": "operator"}),
        store.unit(),
    )
    assert (store.api_keys["k1"].role, store.api_keys["k2"].role) == ("viewer", "operator")
    assert not ApiKey("k1", frozenset({"*"})).may_act and OPERATOR.may_act


class FakeOrders:
    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self.keys = keys

    async def order(self, order_id: UUID) -> dict[str, Any] | None:
        return None

    async def find(self, channel: str, external_id: str) -> UUID | None:
        return None

    async def api_key(self, key_digest: str) -> ApiKey | None:
        return self.keys.get(key_digest)

    async def ready(self) -> bool:
        return True


class NoChanges:
    def subscribe(self) -> asyncio.Queue[str]:
        return asyncio.Queue()

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        pass


async def test_the_board_wants_a_log_in_refuses_viewers_and_cross_site_actions() -> None:
    board_data, _ = a_board()
    board_data.cards_shown = [Card("s1", "o1", "webshop", "E1", "in_fulfillment", "new", [], NOW)]
    orders = FakeOrders({digest("op-key"): OPERATOR, digest("wall-key"): VIEWER})
    board = Board((STANDARD,), board_data, orders, board_data, NoChanges(), clock=lambda: NOW)
    app = build_api(orders, rate_per_s=100, burst=100, board=board, clock=lambda: 0.0)
    async with TestClient(TestServer(app)) as client:
        async with client.get("/board", allow_redirects=False) as anonymous:
            assert anonymous.status == 303 and anonymous.headers["Location"] == "/board/login"
        async with client.post("/board/login", data={"key": "nope"}, allow_redirects=False) as wrong:
            assert wrong.status == 401
        async with client.get("/board", headers={"Authorization": "Bearer wall-key"}) as viewer_page:
            page = await viewer_page.text()
            assert (
                viewer_page.status == 200
                and 'data-external-id="E1"' in page
                and '<form class="move"' not in page
            )
        async with client.get("/board", headers={"Authorization": "Bearer op-key"}) as operator_page:
            assert '<form class="move"' in await operator_page.text()
        move = "/board/shipments/s1/move"
        async with client.post(
            move, data={"stage": "packed"}, headers={"Authorization": "Bearer wall-key"}
        ) as r:
            assert r.status == 403
        # The cookie carries the key; a POST with it must come from the board's own origin.
        async with client.post("/board/login", data={"key": "op-key"}, allow_redirects=False) as login:
            assert login.status == 303 and COOKIE in login.cookies
        async with client.post(
            move, data={"stage": "packed"}, headers={"Origin": "https://evil.example"}
        ) as r:
            assert r.status == 403
        origin = f"http://{client.host}:{client.port}"
        async with client.post(move, data={"stage": "packed"}, headers={"Origin": origin}) as r:
            assert r.status == 202 and "moved to packed" in await r.text()
    assert [a.action for a in board_data.published] == ["move"]


async def test_wrong_keys_on_the_log_in_form_are_limited_per_address() -> None:
    board_data, _ = a_board()
    orders = FakeOrders({digest("op-key"): OPERATOR})
    board = Board((STANDARD,), board_data, orders, board_data, NoChanges(), clock=lambda: NOW)
    app = build_api(orders, rate_per_s=1, burst=2, board=board, clock=lambda: 0.0)
    async with TestClient(TestServer(app)) as client:
        answers = []
        for _ in range(3):
            async with client.post("/board/login", data={"key": "guess"}, allow_redirects=False) as r:
                answers.append(r.status)
        assert answers == [401, 401, 429]


def test_the_openapi_document_lists_the_boards_actions_with_their_refusals() -> None:
    from services.notification.adapters.http_api import OPENAPI

    for path in (
        "/board/shipments/{shipment_id}/move",
        "/board/orders/{order_id}/hold",
        "/board/orders/{order_id}/cancel",
        "/board/deliveries/{delivery_id}/redeliver",
    ):
        assert {"202", "401", "403", "404", "409", "429"} <= OPENAPI["paths"][path]["post"][
            "responses"
        ].keys()


def test_a_card_is_due_before_its_stages_deadline_and_late_from_it() -> None:
    timed = Pipeline("standard", STANDARD.stages, {"picking": 8.0})
    entered = NOW - timedelta(hours=3)
    assert timed.sla("picking", entered, NOW) == ("due", entered + timedelta(hours=8))
    assert timed.sla("picking", entered, entered + timedelta(hours=8)) == (
        "late",
        entered + timedelta(hours=8),
    )
    assert timed.sla("new", entered, NOW) is None
    parsed = pipelines_of(
        {"pipelines": [{"name": "x", "stages": [{"name": "a", "sla_hours": 2}, {"name": "b", "hours": 1}]}]}
    )
    assert parsed[0].sla_hours == {"a": 2.0}
