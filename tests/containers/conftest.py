from __future__ import annotations

import json

import pytest

from libs.platform import stack


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The cost of the run (build times, image sizes, start-up), written by the stack fixture."""
    if config.getoption("markexpr") != "containers":
        return
    results = stack.cache_dir() / "containers" / "last-run.json"
    if not results.exists():
        return
    measured = json.loads(results.read_text())
    terminalreporter.section("containers: what this run cost")
    for what, seconds in measured["seconds"].items():
        terminalreporter.write_line(f"{what}: {seconds:.1f} s")
    for tag, size in measured["bytes"].items():
        terminalreporter.write_line(f"image {tag}: {size / 1e6:.0f} MB")
