"""The fleet as separate processes for tests: Baton's own supervisor, logging to files."""

from __future__ import annotations

from pathlib import Path

from libs.platform.supervisor import Supervisor


class Fleet(Supervisor):
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(env, log_dir)

    def assert_alive(self) -> None:
        if dead := self.exited():
            raise AssertionError(f"fleet processes died: {dead}; logs in {self.log_dir}")

    def log(self, label: str) -> str:
        assert self.log_dir is not None
        path = self.log_dir / f"{label}.log"
        return path.read_text(errors="replace") if path.exists() else ""
