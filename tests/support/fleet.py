"""The fleet as separate processes for tests: Baton's own supervisor, logging to files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from libs.platform.supervisor import Supervisor


class Fleet(Supervisor):
    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        database_urls: Mapping[str, str],
        service_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """``database_urls``: each service logs in as its own role, as deployed; ``service_env``: what
        else each service's processes get (on the secured broker: its own Kafka principal)."""
        super().__init__(env, log_dir, database_urls=database_urls)
        self.service_env = {name: dict(extra) for name, extra in (service_env or {}).items()}

    def start(self, service: str, label: str | None = None, extra_env: dict[str, str] | None = None) -> str:
        return super().start(service, label, self.service_env.get(service, {}) | (extra_env or {}))

    def assert_alive(self) -> None:
        if dead := self.exited():
            raise AssertionError(f"fleet processes died: {dead}; logs in {self.log_dir}")

    def log(self, label: str) -> str:
        assert self.log_dir is not None
        path = self.log_dir / f"{label}.log"
        return path.read_text(errors="replace") if path.exists() else ""
