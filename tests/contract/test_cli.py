"""The `baton` command's promise to people and scripts: a failure is one line naming the address, the
setting and the fix, with exit status 1 (nothing reachable, or refused), 2 (a wrong command line),
never a traceback unless asked for; `--version` says which Baton this is."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib.metadata import version

import pytest

from libs.cli.main import run_cli
from tests.support.infra import free_port

pytestmark = pytest.mark.contract

PASSWORD = "s3cret-Pa55word"


def closed_env() -> dict[str, str]:
    """Kafka and PostgreSQL on loopback ports nobody listens on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATON_", "KAFKA_", "DATABASE_URL"))}
    return env | {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "DATABASE_URL": f"postgresql://operator:{PASSWORD}@127.0.0.1:{free_port()}/baton",
    }


def baton(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "libs.cli.main", *args], env=env, capture_output=True, text=True, timeout=60
    )
    return done, time.monotonic() - started


def test_dead_letters_without_a_broker_end_in_one_line_naming_the_address_and_the_setting() -> None:
    env = closed_env()
    done, took = baton("dlq", "list", env=env)
    assert done.returncode == 1
    assert took < 10
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) <= 3, lines
    [line] = done.stderr.splitlines()
    assert env["KAFKA_BOOTSTRAP_SERVERS"] in line and "connection refused" in line
    assert "KAFKA_BOOTSTRAP_SERVERS" in line and "baton stack up" in line
    assert "Traceback" not in done.stderr


def test_webhooks_without_a_database_end_in_one_line_naming_the_server_and_never_the_password() -> None:
    env = closed_env()
    done, took = baton("webhooks", "list", env=env)
    assert done.returncode == 1
    assert took < 10
    [line] = (done.stdout + done.stderr).splitlines()
    port = env["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0]
    assert f"PostgreSQL at 127.0.0.1:{port} (database baton) is not reachable" in line
    assert "DATABASE_URL" in line
    assert PASSWORD not in line


def test_a_trace_of_something_that_is_not_an_order_id_is_a_usage_error_in_one_line() -> None:
    done, _ = baton("trace", "not-a-uuid", env=closed_env())
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("baton trace: ") and "UUID" in line and "--help" in line


def test_the_traceback_is_shown_only_when_asked_for() -> None:
    done, _ = baton("--debug", "dlq", "list", env=closed_env())
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("baton: no Kafka broker reachable")
    done, _ = baton("webhooks", "list", env=closed_env() | {"BATON_DEBUG": "1"})
    assert "Traceback" in done.stderr and PASSWORD not in done.stderr


def test_version_is_the_installed_packages() -> None:
    done, _ = baton("--version", env=closed_env())
    assert done.returncode == 0
    assert done.stdout == f"baton {version('baton')}\n"


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["dlq", "replay", "--service", "intake"], "KAFKA_BOOTSTRAP_SERVERS"),
        (["top", "--iterations", "1"], "KAFKA_BOOTSTRAP_SERVERS"),
        (["topics", "apply"], "KAFKA_BOOTSTRAP_SERVERS"),
        (["acls", "apply"], "KAFKA_BOOTSTRAP_SERVERS"),
        (["webhooks", "remove", "sub-1"], "KAFKA_BOOTSTRAP_SERVERS"),
        (["webhooks", "list", "--dead"], "DATABASE_URL"),
        (["migrate"], "DATABASE_URL"),
        (["api-keys", "revoke", "key_0123456789ab"], "KAFKA_BOOTSTRAP_SERVERS"),
        (["api-keys", "list"], "DATABASE_URL"),
    ],
)
def test_every_command_that_cannot_reach_kafka_or_postgresql_says_so_in_one_line(
    args: list[str], setting: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in closed_env().items():
        monkeypatch.setenv(name, value)
    for name in ("BATON_DEBUG", "BATON_KAFKA_BOOTSTRAP_SERVERS", "BATON_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert run_cli(args) == 1
    out, err = capsys.readouterr()
    [line] = (out + err).splitlines()
    assert line.startswith("baton: ") and setting in line and "reachable" in line
    assert PASSWORD not in line


@pytest.mark.parametrize(
    "args",
    [
        ["dlq", "list", "--service", "nobody"],
        ["nosuch"],
        ["dlq", "list", "--bogus"],
        ["webhooks", "redeliver"],
        ["api-keys", "add"],
        ["rules", "list", "--bogus"],
    ],
)
def test_a_wrong_command_line_is_one_line_with_status_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("baton") and "--help" in line
