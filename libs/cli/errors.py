"""What `baton` says when Kafka or PostgreSQL is away or refuses: one line naming the address, the
setting to check and the fix, never a traceback (``--debug`` or ``BATON_DEBUG=1`` shows it).

Exit statuses: 1 when something cannot be reached or refuses a request, 2 for a wrong command
line, 78 (EX_CONFIG) when Kafka refuses our login, certificate or a grant — restarting will not help.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError

from libs.platform import dsn
from libs.platform.kafka import (
    AUTHORIZATION_ERRORS,
    KafkaAccess,
    KafkaAccessRefused,
    KafkaUnreachable,
    check_access,
)

EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2
EXIT_REFUSED = 78

KAFKA_CHECK_TIMEOUT_S = 5.0
"""How long a command waits for a bootstrap server before saying it cannot reach Kafka."""
DATABASE_CONNECT_TIMEOUT_S = 5.0

LOCAL_KAFKA = "`baton stack up --kafka-only` starts a local one"
LOCAL_POSTGRES = "`baton stack up` starts a local one"


class CommandFailed(Exception):
    """Ends a command with ``line`` on stderr and exit ``status``."""

    def __init__(self, line: str, status: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(line)
        self.line = line
        self.status = status


def reason(exc: BaseException) -> str:
    """A connection failure in a few words (the OS's words where it has them)."""
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, KafkaConnectionError) and "closed" in str(exc):
        return "it closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def kafka_unreachable(access: KafkaAccess, failures: Mapping[str, BaseException]) -> CommandFailed:
    where = ", ".join(f"{server} ({reason(exc)})" for server, exc in failures.items()) or (
        access.bootstrap_servers
    )
    protocol = access.security.security_protocol
    closed = any(isinstance(e, KafkaConnectionError) for e in failures.values())
    check = "KAFKA_BOOTSTRAP_SERVERS" + (f" and KAFKA_SECURITY_PROTOCOL (now {protocol})" if closed else "")
    return CommandFailed(f"no Kafka broker reachable at {where}; check {check} ({LOCAL_KAFKA})")


async def check_kafka(access: KafkaAccess) -> None:
    """Kafka's login check with a command's deadline: a broker that cannot be reached, or that
    refuses us, ends the command with one line naming the servers and the setting."""
    try:
        await check_access(access, timeout_s=KAFKA_CHECK_TIMEOUT_S)
    except KafkaUnreachable as unreachable:
        raise kafka_unreachable(access, unreachable.failures) from unreachable


def kafka_failure(exc: BaseException, access: KafkaAccess) -> CommandFailed | None:
    """A Kafka error met after the login check (a refused grant, a broker gone mid-command)."""
    if isinstance(exc, KafkaAccessRefused):
        return CommandFailed(str(exc), EXIT_REFUSED)
    if isinstance(exc, AUTHORIZATION_ERRORS):
        return CommandFailed(
            f"Kafka at {access.bootstrap_servers} refused {access.security.who()}: {exc}; "
            "`baton acls apply` (as an admin) grants what libs/contracts/acls.py says, or log in as a "
            "principal that may (KAFKA_SASL_USERNAME)",
            EXIT_REFUSED,
        )
    if isinstance(exc, KafkaError):
        return CommandFailed(
            f"Kafka at {access.bootstrap_servers} failed: {type(exc).__name__}: {exc}; check that the "
            "broker is up and KAFKA_BOOTSTRAP_SERVERS names it"
        )
    return None


def database_failure(exc: BaseException, url: str, setting: str = "DATABASE_URL") -> CommandFailed | None:
    """What a failure to connect to or read from PostgreSQL means, and what to change."""
    try:
        where = f"PostgreSQL at {dsn.address(url)}"
        user = dsn.user_name(url) or "(the default user)"
    except ValueError as bad:
        return CommandFailed(f"{setting} is not a PostgreSQL URL: {bad}", EXIT_USAGE)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return CommandFailed(f"{where}: {exc}; check {setting} (`baton migrate` creates the database)")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):  # password, pg_hba, no role
        return CommandFailed(f"{where} refused user {user!r}: {exc}; check the login in {setting}")
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.InvalidSchemaNameError):
        return CommandFailed(f"{where}: {exc}; run `baton migrate` (as the migrator) first")
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return CommandFailed(
            f"{where}: {exc} (user {user!r}); use a role that may, e.g. the operator role's URL "
            f"(BATON_DB_URL_OPERATOR, granted by `baton migrate`) in {setting}"
        )
    if isinstance(exc, asyncpg.PostgresError):
        return CommandFailed(f"{where}: {exc} ({setting})")
    if isinstance(exc, asyncpg.exceptions.ClientConfigurationError):
        return CommandFailed(f"{setting} is not usable: {exc}", EXIT_USAGE)
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return CommandFailed(f"{where} is not reachable ({reason(exc)}); check {setting} ({LOCAL_POSTGRES})")
    return None


@contextmanager
def database(url: str, setting: str = "DATABASE_URL") -> Iterator[None]:
    """Around code that talks to the PostgreSQL at ``url``: its failures become one line."""
    try:
        yield
    except Exception as exc:
        if (failed := database_failure(exc, url, setting)) is not None:
            raise failed from exc
        raise
