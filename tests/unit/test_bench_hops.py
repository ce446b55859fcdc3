"""`bench.run --hops` takes each hop's wait apart from the fleet's spans (these are the joins), and
runs keep their logs without filling the disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench.run import HOP_PARTS, hop_parts, new_log_dir
from libs.platform import stack

pytestmark = pytest.mark.unit

MS = 1_000_000


def span(
    span_id: str,
    name: str,
    service: str,
    start_ms: float,
    end_ms: float,
    *,
    kind: str = "INTERNAL",
    parent: str | None = None,
    links: tuple[str, ...] = (),
    topic: str = "",
) -> dict[str, Any]:
    return {
        "trace_id": "t",
        "span_id": span_id,
        "parent_id": parent,
        "name": name,
        "kind": kind,
        "service": f"baton-{service}",
        "start_ns": int(start_ms * MS),
        "end_ns": int(end_ms * MS),
        "attributes": {"messaging.destination.name": f"run1.{topic}"} if topic else {},
        "links": [{"trace_id": "t", "span_id": link} for link in links],
    }


def write(directory: Path, spans: list[dict[str, Any]]) -> None:
    (directory / "fleet.1.jsonl").write_text("\n".join(json.dumps(s) for s in spans) + "\nnot json\n")


def test_a_hop_splits_into_commit_relay_fetch_and_claim(tmp_path: Path) -> None:
    write(
        tmp_path,
        [
            span("p", "process run1.validation.facts.v1", "validation", 100, 110, kind="CONSUMER"),
            span("tx1", "validation transaction order_facts", "validation", 95, 125, links=("p",)),
            span("r", "send", "validation", 126, 160, kind="PRODUCER", links=("p",)),
            span("d", "DELETE", "validation", 150, 160, kind="CLIENT", parent="r"),
            span("tx2", "allocation transaction order_facts", "allocation", 170, 200, links=("c",)),
            span(
                "c",
                "process run1.allocation.facts.v1",
                "allocation",
                178,
                190,
                kind="CONSUMER",
                parent="p",
                topic="allocation.facts.v1",
            ),
        ],
    )

    parts = hop_parts(tmp_path)

    hop = parts["validation -> allocation (allocation.facts.v1)"]
    assert [hop[part] for part in HOP_PARTS] == [15.0, 24.0, 20.0, 8.0]
    assert hop["n"] == 1


def test_spans_before_the_window_and_hops_missing_a_link_are_left_out(tmp_path: Path) -> None:
    write(
        tmp_path,
        [
            span("p", "process run1.orders.submitted.v1", "intake", 10, 12, kind="CONSUMER"),
            span("tx1", "intake transaction order_submitted", "intake", 9, 14, links=("p",)),
            # No relay round links the record: the hop cannot be taken apart.
            span("c", "process run1.validation.facts.v1", "validation", 30, 31, kind="CONSUMER", parent="p"),
            span("tx2", "validation transaction order_facts", "validation", 29, 33, links=("c",)),
        ],
    )

    assert hop_parts(tmp_path) == {}
    assert hop_parts(tmp_path, since_ns=1_000 * MS) == {}


def test_a_new_run_keeps_only_the_newest_earlier_log_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "cache_dir", lambda: tmp_path)
    for n in range(7):
        earlier = tmp_path / f"bench-logs-{n}"
        (earlier / "traces").mkdir(parents=True)
        os.utime(earlier, (1_000 + n, 1_000 + n))
    (tmp_path / "kafka").mkdir()  # not the bench's: left alone

    log_dir = new_log_dir()

    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["bench-logs-3", "bench-logs-4", "bench-logs-5", "bench-logs-6", "kafka"]
    assert log_dir.parent == tmp_path and log_dir.name.startswith("bench-logs-") and not log_dir.exists()
