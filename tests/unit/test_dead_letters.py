"""Dead letters keep the record as it came, so a replay restores it; a replay is applied once."""

from __future__ import annotations

import pytest

from libs.platform.messaging import REPLAYED_FROM_HEADER, Incoming, dead_letter

pytestmark = pytest.mark.unit


def lifecycle_record(**headers: str) -> Incoming:
    return Incoming(
        topic="orders.lifecycle.v1",
        partition=3,
        offset=42,
        key="order-1",
        value=b'{"event_type": "order.validated"}',
        headers={"event_id": "e-1", "event_type": "order.validated", "traceparent": "00-ab-cd-01", **headers},
    )


def test_a_dead_letter_carries_every_original_header_and_says_why() -> None:
    letter = dead_letter("intake.dead-letters.v1", lifecycle_record(), "unknown_order", "no such order")
    assert letter.value == b'{"event_type": "order.validated"}' and letter.key == "order-1"
    assert {k: letter.headers[k] for k in ("event_id", "event_type", "traceparent")} == {
        "event_id": "e-1",
        "event_type": "order.validated",
        "traceparent": "00-ab-cd-01",
    }
    assert letter.headers["dlq-cause"] == "unknown_order"
    assert letter.headers["dlq-source-topic"] == "orders.lifecycle.v1"
    assert letter.headers["dlq-source-offset"] == "42"


def test_a_replayed_record_is_a_new_message_once_per_dead_letter() -> None:
    original = lifecycle_record()
    replayed = lifecycle_record(**{REPLAYED_FROM_HEADER: "intake.dead-letters.v1@7"})
    replayed_again = lifecycle_record(**{REPLAYED_FROM_HEADER: "intake.dead-letters.v1@7"})
    replayed_later = lifecycle_record(**{REPLAYED_FROM_HEADER: "intake.dead-letters.v1@9"})
    assert original.message_id == "e-1"
    assert replayed.message_id not in (original.message_id, replayed_later.message_id)
    assert replayed.message_id == replayed_again.message_id


def test_a_dead_letter_of_a_replayed_record_does_not_claim_to_be_a_replay() -> None:
    replayed = lifecycle_record(**{REPLAYED_FROM_HEADER: "intake.dead-letters.v1@7"})
    letter = dead_letter("intake.dead-letters.v1", replayed, "unknown_order", "still unknown")
    assert REPLAYED_FROM_HEADER not in letter.headers
