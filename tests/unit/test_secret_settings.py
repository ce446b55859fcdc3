"""The database password never shows: not in settings' repr, str or dumps, not in a start-up failure's log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from libs.contracts.topology import ServiceTopology
from libs.platform.routing import ServiceRouter
from libs.platform.service import ServiceDefinition, StartupRefused, run
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


def failing(error: Exception) -> ServiceDefinition[BatonSettings]:
    """A service whose start-up fails with ``error`` (raised while its router is built)."""

    def build_router(_: BatonSettings) -> ServiceRouter[object]:
        raise error

    topology = ServiceTopology("intake", inputs=(), emits=())
    return ServiceDefinition(topology=topology, migrations="", settings=BatonSettings, router=build_router)


@pytest.mark.usefixtures("root_logging")
def test_a_start_up_failure_is_one_json_line_without_the_password_even_if_the_error_quotes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    definition = failing(RuntimeError(f"could not connect to {URL} (password {PASSWORD!r})"))
    assert run(definition, BatonSettings(database_url=URL, log_json=True)) == 1
    err = capsys.readouterr().err
    [line] = err.strip().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "CRITICAL" and "could not connect" in entry["exc"]
    assert not leaks(err), err


@pytest.mark.usefixtures("root_logging")
def test_a_refused_start_up_logs_just_its_reason(capsys: pytest.CaptureFixture[str]) -> None:
    reason = "schema intake is behind this release: 002_intake_cancellations.sql not applied"
    assert run(failing(StartupRefused(reason)), BatonSettings(database_url=URL, log_json=False)) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(f"CRITICAL baton.service {reason}")


def test_short_values_are_not_scrubbed_so_logs_stay_readable() -> None:
    from libs.platform.logs import scrub, scrub_list

    assert scrub("baton-intake started", scrub_list(["baton"])) == "baton-intake started"
    assert scrub("pw=longer-secret", scrub_list(["longer-secret"])) == "pw=***"
