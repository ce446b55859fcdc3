"""The demo's pure parts: which delivered orders it returns and what it publishes for them, when it
may stop, and the pipelines file that makes some of its fleet's shipments late."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.cli.demo import (
    LATE_AFTER_S,
    SETTLED,
    STATUS_ORDER,
    Message,
    Returns,
    StatusBoard,
    demo_pipelines,
    demo_pipelines_file,
)
from libs.contracts import topics
from libs.contracts.returns import ReturnReceived, ReturnRequested
from libs.contracts.vocabulary import OrderStatus
from services.fulfillment.app.config import load_pipelines
from services.notification.adapters.board_web import load_pipelines as board_pipelines

pytestmark = pytest.mark.unit


def delivered(n: int) -> dict[str, Any]:
    return {
        "order_id": f"00000000-0000-0000-0000-{n:012d}",
        "external_id": f"demo-1-{n}",
        "version": 9,
        "status": "delivered",
        "shipments": [
            {"shipment_id": f"s{n}", "location_id": "wh-berlin", "lines": [{"sku": "SKU-003", "quantity": 2}]}
        ],
    }


def test_a_seeded_share_of_delivered_orders_asks_to_return_one_unit_valid_by_the_contract() -> None:
    def asked_by(returns: Returns) -> list[Message]:
        return [m for n in range(400) if (m := returns.on_delivered(delivered(n))) is not None]

    returns = Returns("demo-1", share=1 / 8)
    asked = asked_by(returns)
    assert 25 < len(asked) < 80, len(asked)  # about an eighth
    assert asked_by(Returns("demo-1", share=1 / 8)) == asked, "seeded: a run replays"
    topic, key, payload = asked[0]
    request = ReturnRequested.model_validate(payload)
    assert topic == topics.RETURNS_REQUESTED and key == str(request.order_id)
    assert [(line.sku, line.quantity) for line in request.lines] == [("SKU-003", 1)]
    assert returns.on_delivered(delivered(int(request.return_id.split("-")[2]))) is None, "asked once"


def test_an_authorized_return_is_received_where_it_shipped_from_and_stays_pending_until_the_order_shows_it() -> (
    None
):
    returns = Returns("demo-1", share=1.0, damaged_share=0.5)
    board = StatusBoard()
    conditions = set()
    for n in range(20):
        event = delivered(n)
        board.apply(event)
        asked = returns.on_delivered(event)
        assert asked is not None
        return_id = asked[2]["return_id"]
        assert returns.on_status({"return_id": "someone-else", "status": "authorized"}) is None
        topic, key, payload = returns.on_status({"return_id": return_id, "status": "authorized"}) or (
            "",
            "",
            {},
        )
        receipt = ReturnReceived.model_validate(payload)
        assert (topic, key, receipt.location_id) == (topics.RETURNS_RECEIVED, return_id, "wh-berlin")
        conditions |= {line.condition.value for line in receipt.lines}
    assert conditions == {"resellable", "damaged"}
    assert returns.settle(board) == 20
    returns.on_status({"return_id": "demo-1-0-rma", "status": "refused"})
    assert returns.settle(board) == 19 and returns.refused == 1
    board.apply(delivered(1) | {"version": 10, "status": "partially_returned"})
    board.apply(delivered(2) | {"version": 10, "status": "returned"})
    assert returns.settle(board) == 17


def test_return_statuses_are_shown_and_settled_and_are_order_statuses() -> None:
    assert {"returned", "partially_returned"} <= set(STATUS_ORDER) & SETTLED
    assert set(STATUS_ORDER) <= {s.value for s in OrderStatus}


def test_the_demo_pipelines_make_one_stage_late_after_seconds_and_both_readers_accept_them(
    tmp_path: Path,
) -> None:
    packaged = yaml.safe_load(resources.files("services.fulfillment").joinpath("pipelines.yaml").read_text())
    document = demo_pipelines(packaged)
    assert [p["name"] for p in document["pipelines"]] == [p["name"] for p in packaged["pipelines"]]
    path = demo_pipelines_file(tmp_path / "cache")
    assert yaml.safe_load(path.read_text()) == document
    config = load_pipelines(path)  # fulfillment's loader: validated as it would be at start-up
    late = {(p.name, s.name): s.sla_hours for p in config.pipelines for s in p.stages if s.sla_hours}
    assert late == {("standard", "picking"): pytest.approx(LATE_AFTER_S / 3600)}
    assert config.select("standard", "warehouse", "webshop").name == "standard"
    [standard] = [p for p in board_pipelines(path) if p.name == "standard"]  # notification's board
    assert standard.sla_hours == {"picking": pytest.approx(LATE_AFTER_S / 3600)}
    with pytest.raises(ValueError, match="no stage"):
        demo_pipelines(packaged, stage="nowhere")
