"""Database URLs keep every parameter, IPv6 host and odd password through Baton's rewrites."""

from __future__ import annotations

from typing import Any

import asyncpg.connect_utils
import pytest

from libs.platform import dsn

pytestmark = pytest.mark.unit

FULL = (
    "postgresql://baton:s3cr%40t%2Fp%3Aw@db.internal:6432/orders"
    "?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&options=-c%20statement_timeout%3D5000"
    "&application_name=ops&target_session_attrs=read-write"
)


def as_asyncpg_reads_it(url: str) -> tuple[list[Any], Any]:
    """asyncpg's own parser: what a connection made from this URL would use."""
    addrs, params = asyncpg.connect_utils._parse_connect_dsn_and_args(
        dsn=url,
        host=None,
        port=None,
        user=None,
        password=None,
        passfile=None,
        database=None,
        ssl=None,
        service=None,
        servicefile=None,
        direct_tls=None,
        server_settings=None,
        target_session_attrs=None,
        krbsrvname=None,
        gsslib=None,
    )
    return addrs, params


def test_another_database_keeps_credentials_hosts_and_every_query_parameter() -> None:
    moved = dsn.with_database(FULL, "postgres")
    assert moved == FULL.replace("/orders?", "/postgres?")
    # asyncpg would open the CA file at parse time; everything else it reads back as given.
    addrs, params = as_asyncpg_reads_it(moved.replace("sslmode=verify-full", "sslmode=disable"))
    assert addrs == [("db.internal", 6432)]
    assert (params.user, params.password, params.database) == ("baton", "s3cr@t/p:w", "postgres")
    assert params.server_settings == {"options": "-c statement_timeout=5000", "application_name": "ops"}
    assert params.target_session_attrs.value == "read-write"
    assert dsn.parameters(moved)["sslrootcert"] == "/etc/ca.pem"


def test_ipv6_and_multi_host_lists_survive_a_rewrite() -> None:
    url = "postgresql://u@[::1]:5433,[fe80::2]:5434/app?target_session_attrs=primary"
    moved = dsn.with_database(url, "other")
    assert moved == "postgresql://u@[::1]:5433,[fe80::2]:5434/other?target_session_attrs=primary"
    addrs, params = as_asyncpg_reads_it(moved)
    assert addrs == [("::1", 5433), ("fe80::2", 5434)]
    assert params.database == "other"


def test_another_host_keeps_the_login_database_and_parameters() -> None:
    url = "postgresql://u:p@a:1,b:2/db?sslmode=require"
    assert dsn.with_host(url, "::1", 6543) == "postgresql://u:p@[::1]:6543/db?sslmode=require"
    assert dsn.with_host(url, "db.example") == "postgresql://u:p@db.example/db?sslmode=require"


@pytest.mark.parametrize("secret", ["p@ss:w/rd?#%&=", "with space", "ünïcödé", "'; DROP ROLE x; --"])
def test_a_login_with_any_password_reads_back_exactly(secret: str) -> None:
    url = dsn.with_login(
        "postgresql://postgres@127.0.0.1:15432/baton?sslmode=disable", "baton_intake", secret
    )
    _, params = as_asyncpg_reads_it(url)
    assert (params.user, params.password, params.database) == ("baton_intake", secret, "baton")
    assert dsn.password(url) == secret
    assert dsn.user_name(url) == "baton_intake"
    assert secret not in dsn.redacted(url)
    assert dsn.redacted(url).startswith("postgresql://baton_intake:***@127.0.0.1:15432/baton")


def test_a_login_without_password_leaves_it_to_pgpass_and_drops_query_credentials() -> None:
    url = dsn.with_login("postgresql://a:b@h/db?user=x&password=y&sslmode=require", "baton_operator")
    assert url == "postgresql://baton_operator@h/db?sslmode=require"
    assert dsn.password(url) is None


def test_database_name_follows_libpq_dbname_parameter_and_decoding() -> None:
    assert dsn.database_name("postgresql://h/my%20db") == "my db"
    assert dsn.database_name("postgresql://h/x?dbname=y") == "y"
    assert dsn.database_name("postgresql://h") is None
    assert dsn.with_database("postgresql://h/x?dbname=y&sslmode=require", "z") == (
        "postgresql://h/z?sslmode=require"
    )


def test_redaction_hides_passwords_in_userinfo_and_query() -> None:
    assert dsn.redacted(FULL).startswith("postgresql://baton:***@db.internal:6432/orders?sslmode=")
    assert "s3cr" not in dsn.redacted(FULL)
    assert dsn.redacted("postgresql://h/db?password=hunter2") == "postgresql://h/db?password=***"
    assert dsn.redacted("not a url") == "<not a PostgreSQL URL>"


def test_a_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        dsn.with_database("mysql://h/db", "x")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://baton_intake:s3cret@db-1:5432/baton", "db-1:5432 (database baton)"),
        (
            "postgresql://u@[::1]:5432,db-2:5433/baton?sslmode=require",
            "[::1]:5432,db-2:5433 (database baton)",
        ),
        ("postgresql:///baton?host=/run/postgresql&port=5433", "/run/postgresql:5433 (database baton)"),
        ("postgresql://u:pw@db", "db"),
    ],
)
def test_an_address_names_hosts_and_database_but_never_the_login(url: str, expected: str) -> None:
    assert dsn.address(url) == expected
