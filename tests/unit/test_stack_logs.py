"""The local servers' logs stay bounded and their tails are read without loading them whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.platform.stack import log_tail, rotate_log

pytestmark = pytest.mark.unit


def test_a_log_past_the_limit_is_moved_aside_replacing_the_one_before(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    (tmp_path / "broker.log.1").write_text("older")
    log.write_text("x" * 101)
    rotate_log(log, limit=100)
    assert not log.exists()
    assert (tmp_path / "broker.log.1").read_text() == "x" * 101


def test_a_log_within_the_limit_or_missing_stays(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    rotate_log(log, limit=100)
    log.write_text("x" * 100)
    rotate_log(log, limit=100)
    assert log.read_text() == "x" * 100
    assert not (tmp_path / "broker.log.1").exists()


def test_the_tail_is_the_last_bytes_of_the_file(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    log.write_bytes(b"head\n" + b"m" * 50 + b"\nlast line")
    assert log_tail(log, 9) == "last line"
    assert log_tail(log, 10_000).startswith("head")
    assert log_tail(tmp_path / "missing.log", 10) == ""
