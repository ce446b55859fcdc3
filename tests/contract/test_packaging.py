"""The built wheel is the whole product: every file Baton reads at run time is inside it, and an
installed Baton works from a fresh virtualenv with the source tree out of reach (another cwd)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]
DATA_SUFFIXES = {".txt", ".sql", ".yaml", ".xml", ".properties", ".html", ".css"}

# Runs inside the fresh virtualenv, from a folder outside the repository; prints what it found.
PROBE = """
import json, sys
from importlib import resources
from libs.platform import stack
from libs.platform.db import PLATFORM_MIGRATIONS, migration_files
from services.fulfillment.app.use_cases import load_pipelines
from services.notification.adapters.templates import PackageTemplates

values = {"order_id": "o-1", "external_id": "ext-1", "tracking_number": "T1", "carrier": "DHL", "eta": "soon"}
templates = resources.files("services.notification").joinpath("templates")
statuses = sorted(t.name.removesuffix(".txt") for t in templates.iterdir() if t.name.endswith(".txt"))
subjects = {s: PackageTemplates().render(s, values).subject for s in statuses}
migrations = {
    name: [f for f, _ in migration_files(PLATFORM_MIGRATIONS, f"services.{name}.adapters.migrations")]
    for name in ("intake", "validation", "allocation", "fulfillment", "notification")
}
loaded = sorted(
    m.__file__ for n, m in sys.modules.items() if n.split(".")[0] in ("libs", "services") and m.__file__
)
print(json.dumps({
    "source_checkout": str(stack.source_checkout()),
    "cache_dir": str(stack.cache_dir()),
    "kafka_version": stack.kafka_version(),
    "subjects": subjects,
    "pipelines": [p.name for p in load_pipelines().pipelines],
    "migrations": migrations,
    "loaded": loaded,
}))
"""

# Stands in for Maven so `baton stack fetch` runs its real code path offline: it records its
# arguments and "resolves" one jar into the output folder it was given.
FAKE_MVN = """#!/bin/sh
printf '%s\\n' "$@" > "$MVN_ARGS_FILE"
for arg; do case "$arg" in -DoutputDirectory=*) touch "${arg#-DoutputDirectory=}/kafka.jar";; esac; done
"""


def data_files_in_source() -> set[str]:
    """Every file of a kind Baton reads at run time, under the packaged folders."""
    return {
        path.relative_to(ROOT).as_posix()
        for top in ("libs", "services")
        for path in (ROOT / top).rglob("*")
        if path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources (the checkout stays clean), with no network."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for top in ("libs", "services"):
        shutil.copytree(ROOT / top, src / top, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("baton-*.whl")
    return built


@dataclass
class Installed:
    venv: Path
    workdir: Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=self.workdir, env=self.env, capture_output=True, text=True, check=True, timeout=60
        )


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel in a fresh virtualenv outside the repository.

    Its dependencies come from this test run's environment through a plain path entry (a ``.pth``
    line, whose own ``.pth`` files — such as the editable install pointing at the checkout — are
    not processed), so the test needs no network; Baton itself comes only from the wheel.
    """
    base = tmp_path_factory.mktemp("installed")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "baton_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    fake_bin = base / "fake-bin"
    fake_bin.mkdir()
    (fake_bin / "mvn").write_text(FAKE_MVN)
    (fake_bin / "mvn").chmod(0o755)
    workdir = base / "elsewhere"
    workdir.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "BATON_", "KAFKA_")) and k not in ("VIRTUAL_ENV", "XDG_CACHE_HOME")
    }
    env |= {
        "PATH": f"{venv / 'bin'}:{fake_bin}:{env.get('PATH', '')}",
        "HOME": str(base / "home"),
        "XDG_CACHE_HOME": str(base / "xdg-cache"),
        "MVN_ARGS_FILE": str(base / "mvn-args"),
    }
    return Installed(venv, workdir, env)


def test_the_wheel_holds_every_template_migration_pipeline_and_kafka_runtime_file(wheel: Path) -> None:
    needed = data_files_in_source()
    assert {
        "services/notification/templates/delivered.txt",
        "services/fulfillment/pipelines.yaml",
        "libs/platform/migrations/000_platform_inbox_outbox.sql",
        "libs/platform/kafka_runtime/pom.xml",
        "libs/platform/kafka_runtime/log4j2.properties",
    } <= needed
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert needed - names == set(), "read at run time but missing from the wheel"
    assert not any(n.startswith("tests/") for n in names)


def test_an_installed_baton_reads_templates_pipelines_and_migrations_from_its_own_package(
    installed: Installed,
) -> None:
    found = json.loads(installed.run(str(installed.venv / "bin" / "python"), "-c", PROBE).stdout)

    assert found["source_checkout"] == "None"
    assert found["cache_dir"] == str(Path(installed.env["XDG_CACHE_HOME"]) / "baton")
    assert found["subjects"]["delivered"] == "Your order ext-1 was delivered"
    templates = ROOT / "services/notification/templates"
    assert set(found["subjects"]) == {t.stem for t in templates.glob("*.txt")}
    pipelines = yaml.safe_load((ROOT / "services/fulfillment/pipelines.yaml").read_text())["pipelines"]
    assert found["pipelines"] == [p["name"] for p in pipelines]
    assert all(m[0].startswith("000_") and len(m) >= 2 for m in found["migrations"].values())
    outside = [f for f in found["loaded"] if not f.startswith(str(installed.venv))]
    assert outside == [], "Baton code loaded from outside the installed wheel"


def test_an_installed_baton_fetches_kafka_with_its_packaged_pom_into_the_user_cache(
    installed: Installed,
) -> None:
    assert "Usage: baton stack fetch" in installed.run("baton", "stack", "fetch", "--help").stdout

    out = installed.run("baton", "stack", "fetch").stdout

    cache = Path(installed.env["XDG_CACHE_HOME"]) / "baton" / "kafka"
    assert f"Kafka jars: {cache}/libs-" in out
    args = Path(installed.env["MVN_ARGS_FILE"]).read_text().splitlines()
    pom = Path(args[args.index("-f") + 1])
    assert pom.parent == cache
    assert pom.read_text() == (ROOT / "libs/platform/kafka_runtime/pom.xml").read_text()


def test_an_installed_baton_writes_the_asyncapi_document_to_the_current_folder(installed: Installed) -> None:
    installed.run("baton", "contracts")
    assert (installed.workdir / "asyncapi.yaml").read_text() == (ROOT / "docs/asyncapi.yaml").read_text()


def test_the_wheel_declares_its_license_in_spdx_and_carries_the_license_text(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        headers = archive.read(metadata).decode().split("\n\n", 1)[0].splitlines()
        [license_file] = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        carried = archive.read(license_file).decode()
    assert "License-Expression: Apache-2.0" in headers
    assert "License-File: LICENSE" in headers
    assert not any(h.startswith("Classifier: License ::") for h in headers), (
        "SPDX replaces license classifiers"
    )
    assert carried == (ROOT / "LICENSE").read_text()
    assert "Apache License" in carried and "Version 2.0, January 2004" in carried
    python = {h.removeprefix("Classifier: Programming Language :: Python :: ") for h in headers}
    assert {"3.11", "3.12", "3.13"} <= python
