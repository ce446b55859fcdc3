"""The database password never shows: not in settings' repr, str or dumps, not in a start-up failure's log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import cast
from urllib.parse import quote

import pytest
from faststream import FastStream

from libs.platform import dsn
from libs.platform.logs import configure_logging
from libs.platform.service import StartupRefused, run_app
from libs.platform.settings import BatonSettings

pytestmark = pytest.mark.unit

PASSWORD = 'S3cret/pa:ss@wo"rd'
URL = f"postgresql://baton_intake:{quote(PASSWORD, safe='')}@db.internal:5432/baton?sslmode=verify-full"


def leaks(text: str) -> bool:
    return PASSWORD in text or quote(PASSWORD, safe="") in text or json.dumps(PASSWORD)[1:-1] in text


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_settings_hold_the_url_as_a_secret_in_repr_str_and_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    settings = BatonSettings()
    assert settings.database_url.get_secret_value() == URL
    for shown in (repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert not leaks(shown), shown


class FailingApp:
    """Stands in for a FastStream app whose start-up fails."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def run(self) -> None:
        raise self.error


@pytest.mark.usefixtures("root_logging")
def test_a_start_up_failure_is_one_json_line_without_the_password_even_if_the_error_quotes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("intake", "INFO", json=True, secrets=[dsn.password(URL)])
    app = FailingApp(RuntimeError(f"could not connect to {URL} (password {PASSWORD!r})"))
    assert run_app(cast(FastStream, app)) == 1
    err = capsys.readouterr().err
    [line] = err.strip().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "CRITICAL" and "could not connect" in entry["exc"]
    assert not leaks(err), err


@pytest.mark.usefixtures("root_logging")
def test_a_refused_start_up_logs_just_its_reason(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("intake", "INFO", json=False, secrets=[dsn.password(URL)])
    reason = "schema intake is behind this release: 002_intake_cancellations.sql not applied"
    assert run_app(cast(FastStream, FailingApp(StartupRefused(reason)))) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(f"CRITICAL baton.service {reason}")


def test_short_values_are_not_scrubbed_so_logs_stay_readable() -> None:
    from libs.platform.logs import scrub, scrub_list

    assert scrub("baton-intake started", scrub_list(["baton"])) == "baton-intake started"
    assert scrub("pw=longer-secret", scrub_list(["longer-secret"])) == "pw=***"
