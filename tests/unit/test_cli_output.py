"""How `baton` shows things: tables and live views on a terminal, the same figures as plain lines in
a pipe; progress that never stays silent; failures put in one line that names what to fix."""

from __future__ import annotations

import io
import socket

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from rich.console import Console

from libs.cli import errors, output
from libs.cli.demo import Channel, DemoView, Returns, StageBoard, StatusBoard
from libs.cli.progress import MavenDownload, Phases
from libs.cli.top import Snapshot, render, view
from libs.contracts.topics import SERVICES
from libs.platform.kafka import KafkaAccess, KafkaSecurity
from libs.platform.lag import GroupLag

pytestmark = pytest.mark.unit

URL = "postgresql://baton_operator:pw-never-shown@db-1:5432/baton"


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=140, color_system=None)


def pipe() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=140)


def text_of(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def test_a_table_is_drawn_on_a_terminal_and_its_plain_lines_go_to_a_pipe(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = output.table("service", "cause", "source")
    output.add_row(shown, "intake", "invalid_json", "orders.submitted.v1[3]@42")
    on_terminal = terminal()
    output.emit(shown, ["plain line"], on_terminal)
    drawn = text_of(on_terminal)
    assert "│ intake" in drawn and "orders.submitted.v1[3]@42" in drawn, "brackets are text, not markup"
    assert capsys.readouterr().out == ""
    output.emit(shown, ["plain line"], pipe())
    assert capsys.readouterr().out == "plain line\n"


def snapshots() -> tuple[Snapshot, Snapshot]:
    def lag(committed: int) -> dict[str, list[GroupLag]]:
        return {
            "allocation": [
                GroupLag("t1.baton.allocation.order_facts", "t1.allocation.facts.v1", 8, 5000, committed, 2)
            ]
        }

    dead = dict.fromkeys(SERVICES, 0) | {"validation": 3}
    outbox: dict[str, int | None] = dict.fromkeys(SERVICES, 0) | {"intake": None}
    return Snapshot(10.0, lag(1000), dead, outbox), Snapshot(12.0, lag(1400), dead, outbox)


def test_top_shows_the_same_figures_live_and_in_plain_screens() -> None:
    before, now = snapshots()
    plain = render(now, before, "t1.")
    row = next(line for line in plain.splitlines() if line.startswith("allocation"))
    assert row.split() == ["allocation", "baton.allocation.order_facts", "2", "8", "3600", "200.0"]
    assert "validation" in plain and "outbox waiting" in plain
    live = terminal()
    live.print(view(now, before, "t1."))
    drawn = text_of(live)
    for figure in ("baton.allocation.order_facts", "3600", "200.0", "outbox waiting"):
        assert figure in drawn
    assert "t1.baton" not in drawn, "group names without the environment prefix"


def test_the_demo_prints_three_plain_lines_a_tick_in_a_pipe_and_draws_a_view_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    board, stages = StatusBoard(), StageBoard()
    board.apply({"order_id": "o1", "version": 2, "status": "allocated"})
    stages.apply(
        {"shipment_id": "s1", "pipeline": "standard", "entered_stage": "picking", "change": "entered"}
    )
    plain = DemoView(Channel(planned=100, sent=40), pipe())
    plain.show(3.0, board, stages, 2, Returns("run"))
    plain.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "[    3s] orders     1 | allocated 1",
        "         in pipelines | standard/picking 1",
        "         late shipments 2 | returns requested 0, received 0, refused 0",
    ]
    on_terminal = terminal()
    live = DemoView(Channel(planned=100, sent=40), on_terminal)
    live.show(3.0, board, stages, 2, Returns("run"))
    live.close()
    drawn = text_of(on_terminal)
    assert "40/100" in drawn and "allocated" in drawn and "standard/picking" in drawn
    assert "late shipments 2" in drawn


def test_maven_downloads_are_counted_from_its_output_and_its_error_is_kept() -> None:
    download = MavenDownload(pipe())
    download.line(
        "[INFO] Downloading from central: https://repo.maven.apache.org/maven2/a/b/kafka-clients-4.1.1.jar"
    )
    download.line(
        "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/a/b/kafka-clients-4.1.1.jar "
        "(11 MB at 5.2 MB/s)"
    )
    download.line(
        "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/x/y.pom (2.5 kB at 90 kB/s)"
    )
    assert download.summary() == "2 files, 11.0 MB downloaded"
    download.line("[ERROR] Failed to execute goal: could not resolve dependencies for project x")
    download.line("[ERROR] -> [Help 1]")
    assert download.first_error() == "Failed to execute goal: could not resolve dependencies for project x"


def test_phases_print_a_plain_line_at_most_every_few_seconds_in_a_pipe() -> None:
    out = pipe()
    with Phases(["submitting", "settling"], out, every_s=3600) as phases:
        phases.start("submitting", 100)
        phases.update(10, "10 of 100 submitted")
        phases.update(20, "20 of 100 submitted")
        phases.start("settling", 100)
        phases.update(5, "5 of 100 settled")
    lines = text_of(out).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("  [submitting") and lines[0].endswith("10 of 100 submitted")
    assert lines[1].endswith("5 of 100 settled")


def test_a_database_failure_names_the_server_the_setting_and_the_fix_but_never_the_password() -> None:
    cases = {
        ConnectionRefusedError(111, "Connection refused"): "PostgreSQL at db-1:5432 (database baton) is not "
        "reachable (connection refused); check DATABASE_URL",
        socket.gaierror(-2, "Name or service not known"): "(unknown host)",
        asyncpg.InvalidPasswordError("password authentication failed"): "refused user 'baton_operator'",
        asyncpg.UndefinedTableError(
            'relation "notification.subscriptions" does not exist'
        ): "run `baton migrate`",
        asyncpg.InsufficientPrivilegeError("permission denied"): "BATON_DB_URL_OPERATOR",
        asyncpg.InvalidCatalogNameError('database "baton" does not exist'): "creates the database",
    }
    for exc, expected in cases.items():
        failed = errors.database_failure(exc, URL)
        assert failed is not None and failed.status == 1
        assert expected in failed.line, failed.line
        assert "pw-never-shown" not in failed.line
    assert errors.database_failure(ValueError("a bug"), URL) is None


def test_kafka_failures_name_the_servers_the_setting_and_the_fix() -> None:
    access = KafkaAccess("kafka-1:9092,kafka-2:9092")
    unreachable = errors.kafka_unreachable(
        access,
        {
            "kafka-1:9092": socket.gaierror(-2, "x"),
            "kafka-2:9092": KafkaConnectionError("Connection at x closed"),
        },
    )
    assert unreachable.status == 1
    assert unreachable.line.startswith(
        "no Kafka broker reachable at kafka-1:9092 (unknown host), kafka-2:9092 (it closed the connection); "
        "check KAFKA_BOOTSTRAP_SERVERS and KAFKA_SECURITY_PROTOCOL (now PLAINTEXT)"
    )
    secured = KafkaAccess(
        "kafka-1:9093",
        KafkaSecurity(
            security_protocol="SASL_SSL",
            sasl_mechanism="PLAIN",
            sasl_username="reader",
            sasl_password="pw-never-shown",
        ),
    )
    denied = errors.kafka_failure(
        TopicAuthorizationFailedError("may not read intake.dead-letters.v1"), secured
    )
    assert denied is not None and denied.status == errors.EXIT_REFUSED
    assert (
        "'reader'" in denied.line
        and "baton acls apply" in denied.line
        and "pw-never-shown" not in denied.line
    )
