"""What a Baton process exports: its own metrics plus the standard process and Python ones, and no
``*_created`` series."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from libs.platform import metrics

pytestmark = pytest.mark.unit


def test_a_scrape_carries_process_and_python_metrics_beside_batons_own() -> None:
    metrics.count(metrics.RECORDS, "unit", "orders", "applied")
    text = generate_latest(metrics.REGISTRY).decode()
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_objects_collected_total",
        'baton_records_total{outcome="applied",service="unit",subscription="orders"}',
    ):
        assert name in text
    assert {"process_cpu_seconds_total", "python_info", "baton_records_total"} <= metrics.metric_names()


def test_counters_and_histograms_export_no_created_series() -> None:
    metrics.count(metrics.DEAD_LETTERS, "unit", "invalid_json")
    metrics.observe(metrics.BATCH_SECONDS, "unit", "orders", value=0.01)
    text = generate_latest(metrics.REGISTRY).decode()
    assert "_created" not in text
    assert not any(name.endswith("_created") for name in metrics.metric_names())
