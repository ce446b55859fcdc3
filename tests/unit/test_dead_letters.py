"""Dead letters keep the record as it came, so a replay restores it; a replay is applied once."""

from __future__ import annotations

import pytest

from libs.platform.messaging import REPLAYED_FROM_HEADER, Incoming, dead_letter

pytestmark = pytest.mark.unit


def lifecycle_record(**headers: str) -> Incoming:
    return Incoming(
        topic="intake.facts.v1",
        partition=3,
        offset=42,
        key="order-1",
        value=b'{"event_type": "order.validated"}',
        headers={"event_id": "e-1", "event_type": "order.validated", "traceparent": "00-ab-cd-01", **headers},
    )


def test_a_dead_letter_carries_every_original_header_and_says_why() -> None:
    letter = dead_letter(
        "intake.dead-letters.v1", lifecycle_record(), "unknown_order", "no such order", source_id="e-1"
    )
    assert letter.value == b'{"event_type": "order.validated"}' and letter.key == "order-1"
    assert {k: letter.headers[k] for k in ("event_id", "event_type", "traceparent")} == {
        "event_id": "e-1",
        "event_type": "order.validated",
        "traceparent": "00-ab-cd-01",
    }
    assert letter.headers["dlq-cause"] == "unknown_order"
    assert letter.headers["dlq-source-topic"] == "intake.facts.v1"
    assert letter.headers["dlq-source-offset"] == "42"
    assert letter.headers["dlq-source-message-id"] == "e-1"


def test_a_replayed_record_is_a_new_message_once_per_dead_letter() -> None:
    original = lifecycle_record()
    replayed = lifecycle_record(**{REPLAYED_FROM_HEADER: "intake.dead-letters.v1@7"})
    replayed_again = lifecycle_record(**{REPLAYED_FROM_HEADER: "intake.dead-letters.v1@7"})
    replayed_later = lifecycle_record(**{REPLAYED_FROM_HEADER: "intake.dead-letters.v1@9"})

    def ids(record: Incoming) -> str:
        return record.message_id(trust_event_id=True)

    assert ids(original) == "e-1"
    assert ids(replayed) not in (ids(original), ids(replayed_later))
    assert ids(replayed) == ids(replayed_again)


def test_a_dead_letter_of_a_replayed_record_does_not_claim_to_be_a_replay() -> None:
    replayed = lifecycle_record(**{REPLAYED_FROM_HEADER: "intake.dead-letters.v1@7"})
    letter = dead_letter("intake.dead-letters.v1", replayed, "unknown_order", "still unknown", source_id="x")
    assert REPLAYED_FROM_HEADER not in letter.headers


def test_a_dead_letter_of_a_record_with_nul_in_its_key_and_headers_can_be_stored() -> None:
    """The outbox keeps keys as text and headers as jsonb, neither of which holds NUL."""
    hostile = Incoming(
        "orders.submitted.v1", 0, 7, "web\x00shop", b"\x00{}", {"event_type": "x\x00y", "a\x00": "\udc80"}
    )
    letter = dead_letter("intake.dead-letters.v1", hostile, "invalid_json", "bad\x00", source_id="p")
    assert letter.value == b"\x00{}", "the value is kept exactly (bytea)"
    stored = [letter.key, *letter.headers, *letter.headers.values()]
    assert not any("\x00" in text for text in stored)
    assert all(text.encode("utf-8") for text in stored)
    assert letter.key == "web\ufffdshop"
