"""Prometheus's own checker, `promtool`, built once from its Go module into the cache.

Prometheus publishes no Python or Debian package of promtool; the Go module proxy serves its
source. Built with every service-discovery plugin left out except DNS (which the Compose
configuration uses), it takes about 3.5 minutes on 2 cores from nothing, then it is reused:
``<cache>/promtool/<version>/promtool``, complete once the ``.complete`` stamp exists.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from libs.platform import stack

MODULE = "github.com/prometheus/prometheus/cmd/promtool"
VERSION = "v0.316.0"
"""The Go module version of Prometheus 3.16 (Prometheus 3.x tags its Go module v0.3xx.y)."""
TAGS = "remove_all_sd,enable_dns_sd"
BUILD_TIMEOUT_S = 1800


class PromtoolUnavailable(Exception):
    """No Go toolchain here, or one older than Prometheus needs (1.26.7): promtool cannot be built."""


def promtool() -> Path:
    """The promtool binary, built first if this cache has none (one build at a time: a lock)."""
    home = stack.cache_dir() / "promtool" / VERSION
    binary, stamp = home / "promtool", home / ".complete"
    if stamp.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise PromtoolUnavailable("no Go toolchain (`go`) on the PATH to build promtool with")
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it right now
        if stamp.exists():
            return binary
        with tempfile.TemporaryDirectory(dir=home) as out:
            env = os.environ | {
                "GOBIN": out,
                "GOFLAGS": "-mod=mod",
                "CGO_ENABLED": "0",
                "GOTOOLCHAIN": "local",
            }
            built = subprocess.run(
                [go, "install", "-tags", TAGS, "-trimpath", "-ldflags=-s -w", f"{MODULE}@{VERSION}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
            )
            if "requires go >=" in built.stderr:  # an older Go: as if there were none
                raise PromtoolUnavailable(built.stderr.strip().splitlines()[-1])
            if built.returncode != 0:
                raise RuntimeError(f"building promtool failed:\n{built.stderr[-3000:]}")
            os.replace(Path(out) / "promtool", binary)
        stamp.touch()
    return binary
