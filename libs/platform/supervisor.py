"""Runs services as separate operating-system processes (`baton run <service>`), and stops them all.

Used by `baton up` (make run), `baton demo` and the end-to-end tests, so that all of them run the
fleet exactly the way an operator does.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO


class Supervisor:
    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path | None = None,
        ops_port_base: int | None = None,
        database_urls: Mapping[str, str] | None = None,
    ) -> None:
        """With ``log_dir`` each process logs to ``<label>.log``; without, output is prefixed to stdout.

        Each process serves /metrics, /livez and /readyz on a port of its own: ``ops_port_base``,
        ``ops_port_base + 1``, ... in start order, or free ports when no base is given.
        ``database_urls`` gives each service its own role's URL (``BATON_DATABASE_URL``), as deployed.
        """
        self.env = env
        self.database_urls = dict(database_urls or {})
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ops_ports: dict[str, int] = {}
        self._ops_port_base = ops_port_base
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, service: str, label: str | None = None, extra_env: dict[str, str] | None = None) -> str:
        label = label or service
        output: IO[bytes] | int = (
            (self.log_dir / f"{label}.log").open("ab") if self.log_dir is not None else subprocess.PIPE
        )
        port = self.ops_ports.get(label) or (
            self._ops_port_base + len(self.ops_ports) if self._ops_port_base else _free_port()
        )
        self.ops_ports[label] = port
        env = self.env | {"BATON_INSTANCE_ID": label, "BATON_OPS_PORT": str(port)}
        if service in self.database_urls:
            env["BATON_DATABASE_URL"] = self.database_urls[service]
        process = subprocess.Popen(
            [sys.executable, "-m", "libs.cli.main", "run", service],
            env=env | (extra_env or {}),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        self.processes[label] = process
        if self.log_dir is None:
            threading.Thread(target=_prefix_output, args=(label, process), daemon=True).start()
        return label

    def kill(self, label: str) -> None:
        """SIGKILL: a crash, no draining."""
        process = self.processes.pop(label)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def terminate(self, label: str, timeout: float = 30) -> int:
        """SIGTERM and wait: the service drains in-flight work and commits."""
        process = self.processes.pop(label)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

    def exited(self) -> dict[str, int]:
        return {label: p.returncode for label, p in self.processes.items() if p.poll() is not None}

    def stop(self, timeout: float = 30) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prefix_output(label: str, process: subprocess.Popen[bytes]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(f"{label:>14} | {line.decode(errors='replace')}")
        sys.stdout.flush()
