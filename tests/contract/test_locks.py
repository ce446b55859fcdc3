"""The hashed lock files agree with pyproject.toml's pins, so what `make install` and the image
install (`pip install --require-hashes -r requirements/*.lock`) is what pyproject says."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: list[str]) -> dict[str, str]:
    """``name==version`` requirements as {normalized name: version}; anything else is refused."""
    found = {}
    for requirement in requirements:
        match = PIN.match(requirement.strip())
        assert match, f"{requirement!r} is not pinned with =="
        found[normalized(match[1])] = match[2]
    return found


def locked(name: str) -> dict[str, str]:
    """The pinned packages of a lock file; each must carry at least one hash."""
    text = (ROOT / "requirements" / name).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    found = {}
    for entry in entries:
        if entry.startswith("#") or not entry.strip():
            continue
        match = PIN.match(entry)
        assert match, f"{name}: unexpected entry {entry.splitlines()[0]!r}"
        assert "--hash=sha256:" in entry, f"{name}: {match[1]} has no hash"
        found[normalized(match[1])] = match[2]
    return found


RUNTIME = pins(PYPROJECT["project"]["dependencies"])
DEV = pins(PYPROJECT["project"]["optional-dependencies"]["dev"])
TOOLS = pins(
    [line for line in (ROOT / "requirements/tools.in").read_text().splitlines() if line and line[0] != "#"]
)


@pytest.mark.parametrize(
    ("lock", "expected"), [("runtime.lock", RUNTIME | TOOLS), ("dev.lock", RUNTIME | DEV | TOOLS)]
)
def test_every_pin_of_pyproject_is_locked_at_the_same_version(lock: str, expected: dict[str, str]) -> None:
    found = locked(lock)
    drifted = {
        name: (version, found.get(name)) for name, version in expected.items() if found.get(name) != version
    }
    assert drifted == {}, f"pyproject pin vs {lock} (run `make lock`)"


def test_the_runtime_lock_has_no_development_tools() -> None:
    found = locked("runtime.lock")
    assert {"pytest", "mypy", "ruff", "uv", "podman-compose"} & found.keys() == set()


def test_both_locks_agree_on_every_package_they_share() -> None:
    runtime, dev = locked("runtime.lock"), locked("dev.lock")
    assert runtime.keys() <= dev.keys()
    assert {n: (v, dev[n]) for n, v in runtime.items() if dev[n] != v} == {}


def test_the_locked_setuptools_satisfies_the_build_system() -> None:
    [requirement] = PYPROJECT["build-system"]["requires"]
    minimum = requirement.split(">=")[1]
    version = locked("runtime.lock")["setuptools"]
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))
