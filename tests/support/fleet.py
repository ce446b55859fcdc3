"""The fleet as separate operating-system processes, exactly as `baton run <service>` runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class Fleet:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, service: str, label: str | None = None, extra_env: dict[str, str] | None = None) -> str:
        label = label or service
        log = (self.log_dir / f"{label}.log").open("ab")
        self.processes[label] = subprocess.Popen(
            [sys.executable, "-m", "libs.cli.main", "run", service],
            env=self.env | {"BATON_INSTANCE_ID": label} | (extra_env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return label

    def kill(self, label: str) -> None:
        process = self.processes.pop(label)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def terminate(self, label: str, timeout: float = 30) -> int:
        process = self.processes.pop(label)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

    def assert_alive(self) -> None:
        dead = {label: p.returncode for label, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise AssertionError(f"fleet processes died: {dead}; logs in {self.log_dir}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def log(self, label: str) -> str:
        path = self.log_dir / f"{label}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


__all__ = ["Fleet", "os", "wait_until"]
