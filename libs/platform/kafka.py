"""Kafka at the edge: who Baton is to the broker, every client it opens, and topic creation.

Every Kafka client in Baton — the services' consumers, the outbox relay, lag probes, the CLI, the
simulators, the benchmark and the tests — is made by ``KafkaAccess`` (``settings.kafka``), so the
security settings apply everywhere at once. A new client must be made the same way:
``settings.kafka.producer(...)``, ``.consumer(...)``, ``.admin(...)`` or ``.options()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CoordinatorLoadInProgressError,
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    NotCoordinatorForGroupError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
    for_code,
)
from aiokafka.helpers import create_ssl_context
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.contracts.topics import TOPICS, TopicSpec

if TYPE_CHECKING:
    from libs.platform.settings import BatonSettings

log = logging.getLogger("baton.kafka")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _env(name: str) -> AliasChoices:
    """The name operators and Kafka tooling use, and Baton's prefixed alias (which wins)."""
    return AliasChoices(f"BATON_{name}", name)


class KafkaSecurity(BaseModel):
    """How Baton proves who it is to Kafka and checks that it talks to the right broker.

    Read from ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME``,
    ``KAFKA_SASL_PASSWORD``, ``KAFKA_SSL_CAFILE``, ``KAFKA_SSL_CERTFILE`` and ``KAFKA_SSL_KEYFILE``
    (each also as ``BATON_KAFKA_...``). Without a CA file, TLS trusts the system's CAs, as managed
    Kafka services expect.

    OAUTHBEARER is not offered: aiokafka speaks it only with a token-provider object written in
    code; it has no OAuth client (token endpoint, client credentials, refresh) the way the Java
    client's login callback handler has, so it cannot be configured with settings alone. GSSAPI
    (Kerberos) is left out for the same reason: it needs a keytab and system libraries.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore", hide_input_in_errors=True)

    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", validation_alias=_env("KAFKA_SECURITY_PROTOCOL")
    )
    sasl_mechanism: SaslMechanism | None = Field(default=None, validation_alias=_env("KAFKA_SASL_MECHANISM"))
    sasl_username: str | None = Field(default=None, validation_alias=_env("KAFKA_SASL_USERNAME"))
    sasl_password: SecretStr | None = Field(default=None, validation_alias=_env("KAFKA_SASL_PASSWORD"))
    ssl_cafile: str | None = Field(default=None, validation_alias=_env("KAFKA_SSL_CAFILE"))
    ssl_certfile: str | None = Field(default=None, validation_alias=_env("KAFKA_SSL_CERTFILE"))
    ssl_keyfile: str | None = Field(default=None, validation_alias=_env("KAFKA_SSL_KEYFILE"))

    @classmethod
    def from_environment(cls) -> KafkaSecurity:
        """From ``KAFKA_*`` / ``BATON_KAFKA_*`` variables; constructing one directly never reads them."""
        return _KafkaSecurityFromEnvironment()

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        """Refuse settings that cannot work, naming them, before anything connects."""
        protocol = self.security_protocol
        sasl = (self.sasl_mechanism, self.sasl_username, self.sasl_password)
        if self.uses_sasl:
            if self.sasl_mechanism is None:
                raise ValueError(f"KAFKA_SASL_MECHANISM is needed with KAFKA_SECURITY_PROTOCOL={protocol}")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(
                    f"KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are needed with KAFKA_SECURITY_PROTOCOL={protocol}"
                )
        elif any(v is not None for v in sasl):
            raise ValueError(
                f"KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL={protocol} does not log in; "
                "use SASL_SSL or SASL_PLAINTEXT"
            )
        tls = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not self.uses_ssl and any(v is not None for v in tls):
            raise ValueError(f"KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE")
        return self

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def who(self) -> str:
        """For log lines: the protocol and the user, never the password."""
        if self.uses_sasl:
            return f"{self.security_protocol} as {self.sasl_username!r} ({self.sasl_mechanism})"
        return self.security_protocol

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (host name checked); an unreadable file is refused by its setting's name."""
        if not self.uses_ssl:
            return None
        for setting, path in (
            ("KAFKA_SSL_CAFILE", self.ssl_cafile),
            ("KAFKA_SSL_CERTFILE", self.ssl_certfile),
            ("KAFKA_SSL_KEYFILE", self.ssl_keyfile),
        ):
            if path is not None:
                try:
                    with open(path, "rb"):
                        pass
                except OSError as exc:
                    raise KafkaAccessRefused(f"{setting}: cannot read {path}: {exc.strerror}") from None
        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
            return context
        except ssl.SSLError as exc:
            raise KafkaAccessRefused(
                f"the TLS files are not a usable CA, certificate or key ({exc.reason or exc}) "
                "(KAFKA_SSL_CAFILE / KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE)"
            ) from None

    def client_options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments for this security (without the bootstrap servers)."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_ssl:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value(),
            }
        return options


class _KafkaSecurityFromEnvironment(BaseSettings, KafkaSecurity):
    model_config = SettingsConfigDict(
        env_ignore_empty=True, extra="ignore", frozen=True, populate_by_name=True, hide_input_in_errors=True
    )


@dataclass(frozen=True)
class KafkaAccess:
    """Where the brokers are and who we are to them: the factory of every Kafka client."""

    bootstrap_servers: str
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @cached_property
    def _security_options(self) -> dict[str, Any]:
        return self.security.client_options()

    def options(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client: servers, security, then ``overrides``."""
        return {"bootstrap_servers": self.bootstrap_servers, **self._security_options, **overrides}

    def producer(self, **overrides: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.options(**overrides))

    def consumer(self, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.options(**overrides))

    def admin(self, **overrides: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.options(**overrides))


# ---------------------------------------------------------------- start-up check


class KafkaAccessRefused(Exception):
    """The broker answers but refuses us (credentials, certificate, mechanism): waiting will not
    help, so a process says so in one line naming the setting and stops."""


class KafkaUnreachable(KafkaConnectionError):  # type: ignore[misc]
    """No bootstrap server answered (down, unknown host, another protocol): worth waiting for in a
    service; the CLI says which server failed how (``failures``: server -> the error)."""

    def __init__(self, message: str, failures: dict[str, BaseException]) -> None:
        super().__init__(message)
        self.failures = failures


_CERT_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "ACCESS_DENIED",
)


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def refusal(exc: BaseException, where: str, security: KafkaSecurity) -> KafkaAccessRefused | None:
    """What a failed connection means, if it is a refusal rather than a broker that is away."""
    for cause in _causes(exc):
        if isinstance(cause, SaslAuthenticationFailed | IllegalSaslStateError):
            return KafkaAccessRefused(
                f"Kafka at {where} refused the SASL login of user {security.sasl_username!r} "
                f"with {security.sasl_mechanism} (KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD)"
            )
        if isinstance(cause, UnsupportedSaslMechanismError):
            return KafkaAccessRefused(
                f"Kafka at {where} does not offer SASL mechanism {security.sasl_mechanism} (KAFKA_SASL_MECHANISM)"
            )
        if isinstance(cause, ssl.SSLCertVerificationError):
            return KafkaAccessRefused(
                f"Kafka's certificate at {where} is not trusted: {cause.verify_message} (KAFKA_SSL_CAFILE)"
            )
        if isinstance(cause, ssl.SSLError):
            reason = str(cause.reason or cause)
            if any(alert in reason.upper() for alert in _CERT_ALERTS):
                return KafkaAccessRefused(
                    f"Kafka at {where} refused our client certificate ({reason}) "
                    "(KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE)"
                )
            if "WRONG_VERSION_NUMBER" in reason.upper() or "RECORD_LAYER_FAILURE" in reason.upper():
                return KafkaAccessRefused(
                    f"Kafka at {where} does not speak TLS ({reason}) "
                    f"(KAFKA_SECURITY_PROTOCOL={security.security_protocol})"
                )
    return None


async def check_access(access: KafkaAccess, timeout_s: float = 10.0) -> None:
    """Log in to a bootstrap server the way every client will, and say why if we are refused.

    aiokafka reports a refused SASL login as ``KafkaConnectionError: Unable to bootstrap``, the
    same as a broker that is down, and logs the real cause. Connecting once with aiokafka's own
    ``create_conn`` raises the cause instead: a refusal becomes ``KafkaAccessRefused``; a broker
    that cannot be reached stays a (transient) ``KafkaConnectionError``.
    """
    security = access.security
    options = access.options()
    options.pop("bootstrap_servers")
    failures: dict[str, BaseException] = {}
    for server in [s.strip() for s in access.bootstrap_servers.split(",") if s.strip()]:
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]") or server,
                    int(port or 9092),
                    client_id="baton-access-check",
                    request_timeout_ms=int(timeout_s * 1000),
                    **options,
                ),
                timeout_s,
            )
        except (OSError, KafkaError, TimeoutError, EOFError) as exc:
            if (refused := refusal(exc, server, security)) is not None:
                raise refused from None
            failures[server] = exc
            continue
        conn.close()
        return
    raise KafkaUnreachable(
        f"no Kafka broker reachable ({security.who()}): "
        + "; ".join(f"{server}: {exc!r}" for server, exc in failures.items()),
        failures,
    )


async def wait_for_login(access: KafkaAccess, timeout_s: float = 60.0) -> None:
    """Until a broker just started accepts a login (its listener opens a moment before it serves)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await check_access(access)
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


# ---------------------------------------------------------------- broker and topics


class TopicsMissing(KafkaError):  # type: ignore[misc]
    """Topics a process needs do not exist yet (an operator or a Job creates them): worth waiting for."""

    retriable = True


AUTHORIZATION_ERRORS = (
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
)


def topic_configs(spec: TopicSpec) -> dict[str, str]:
    """The topic configs Baton sets (the broker's defaults apply to the rest)."""
    return {"retention.ms": str(spec.retention_hours * 3600 * 1000)}


@dataclass(frozen=True)
class TopicChanges:
    """What ``apply_topics`` did: the topics it created, and per existing topic the configs it
    changed to the table's values."""

    created: list[str] = field(default_factory=list)
    altered: dict[str, dict[str, str]] = field(default_factory=dict)


async def apply_topics(settings: BatonSettings) -> TopicChanges:
    """Create every Baton topic that is missing (with its partition count and configs) and bring the
    configs of those that exist to the table (a retention shortened in ``topics.py`` applies to the
    topics already there). Idempotent: a second run changes nothing.

    Needs CREATE, DESCRIBE_CONFIGS and ALTER_CONFIGS (the admin principal); a principal without
    them gets ``KafkaAccessRefused`` naming the user."""
    admin = settings.kafka.admin()
    await admin.start()
    try:
        listed = set(await admin.list_topics())
        specs = {settings.topic(spec.name): spec for spec in TOPICS}
        created = await _create_topics(admin, settings, [n for n in specs if n not in listed])
        existing = {n: topic_configs(spec) for n, spec in specs.items() if n not in created}
        altered = await _align_configs(admin, settings, existing)
        await _wait_for_configs(admin, altered)
        return TopicChanges(created, altered)
    finally:
        await admin.close()


async def _create_topics(admin: AIOKafkaAdminClient, settings: BatonSettings, names: list[str]) -> list[str]:
    if not names:
        return []
    specs = {settings.topic(spec.name): spec for spec in TOPICS}
    wanted = [
        NewTopic(
            name=name,
            num_partitions=specs[name].partitions,
            replication_factor=settings.topic_replication_factor,
            topic_configs=topic_configs(specs[name]),
        )
        for name in names
    ]
    response = await admin.create_topics(wanted)
    created = []
    for name, code, *message in response.topic_errors:
        error = for_code(code)
        if error in AUTHORIZATION_ERRORS:
            raise KafkaAccessRefused(
                f"Kafka refused to create topic {name} for {settings.kafka_security.who()}: "
                "only an admin may create topics (run `baton topics apply` as one)"
            )
        if code == 0:
            created.append(name)
        elif error is not TopicAlreadyExistsError:
            raise error(f"creating {name}: {message[0] if message else ''}")
    await wait_for_leaders(admin, created)
    return created


DYNAMIC_TOPIC_CONFIG = 1
"""DescribeConfigs' `config_source` of a value set on the topic itself (not a broker default)."""


async def _align_configs(
    admin: AIOKafkaAdminClient, settings: BatonSettings, wanted: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """Set the configs of existing topics that differ from ``wanted``; returns what changed.

    aiokafka speaks AlterConfigs, which replaces *all* of a topic's own configs with those sent: a
    value someone set on the topic besides Baton's would fall back to the broker default. So each
    topic's own configs are read first and sent along unchanged; a topic with a secret config
    (which the broker never shows) is left alone rather than losing it."""
    if not wanted:
        return {}
    described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in wanted])
    changes: dict[str, dict[str, str]] = {}
    resources: list[ConfigResource] = []
    for response in described:
        for code, message, _, name, entries in response.resources:
            _raise_for(code, message, f"reading the configs of topic {name}", settings)
            own = {
                e[0]: e[1]
                for e in entries
                if (e[3] == DYNAMIC_TOPIC_CONFIG if response.API_VERSION >= 1 else not e[3])
            }
            differing = {k: v for k, v in wanted[name].items() if own.get(k) != v}
            if not differing:
                continue
            if any(e[4] and e[0] in own for e in entries):
                log.warning(
                    "topic has a secret config: not altered", extra={"topic": name, "wanted": differing}
                )
                continue
            changes[name] = differing
            resources.append(ConfigResource(ConfigResourceType.TOPIC, name, own | wanted[name]))
    if resources:
        for response in await admin.alter_configs(resources):
            for code, message, _, name in response.resources:
                _raise_for(code, message, f"altering the configs of topic {name}", settings)
    return changes


async def _wait_for_configs(
    admin: AIOKafkaAdminClient, changes: dict[str, dict[str, str]], timeout_s: float = 30.0
) -> None:
    """Return once the brokers show the changed configs: an alteration takes effect a moment after
    the controller accepted it, and a second ``apply`` right after would otherwise make it again."""
    deadline = time.monotonic() + timeout_s
    waiting = dict(changes)
    while waiting and time.monotonic() < deadline:
        described = await admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(configs))
                for name, configs in waiting.items()
            ]
        )
        for response in described:
            for code, _, _, name, entries in response.resources:
                if code == 0 and all(
                    dict((e[0], e[1]) for e in entries).get(k) == v for k, v in waiting[name].items()
                ):
                    del waiting[name]
        if waiting:
            await asyncio.sleep(0.2)
    if waiting:
        log.warning("altered topic configs not in effect yet", extra={"topics": list(waiting)})


def _raise_for(code: int, message: str | None, doing: str, settings: BatonSettings) -> None:
    if code == 0:
        return
    error = for_code(code)
    if error in AUTHORIZATION_ERRORS:
        raise KafkaAccessRefused(
            f"Kafka refused {doing} for {settings.kafka_security.who()}: "
            "only an admin may change topics (run `baton topics apply` as one)"
        )
    raise error(f"{doing}: {message or ''}")


async def wait_for_leaders(admin: AIOKafkaAdminClient, names: Sequence[str], timeout_s: float = 30.0) -> None:
    """Return once every partition of the new topics has a leader.

    Until then producers and consumers get `NotLeaderForPartition` errors (logged by the clients as
    errors) on a fresh start; waiting here keeps a clean start free of them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = await admin.describe_topics(list(names))
        if all(
            t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        await asyncio.sleep(0.1)
    log.warning("new topics still have partitions without a leader", extra={"topics": list(names)})


async def wait_for_group_coordinators(
    settings: BatonSettings, groups: Sequence[str], timeout_s: float = 60.0
) -> None:
    """Return once the broker names a coordinator for each of ``groups``.

    On a broker's first start the group coordinator (the `__consumer_offsets` topic) is created
    on the first request for it; consumers that join before it has leaders log a stream of
    `GroupCoordinatorNotAvailable` errors. Waiting here keeps a clean start free of them."""
    admin = settings.kafka.admin()
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        waiting = list(groups)
        while waiting:
            try:
                await admin.find_coordinator(waiting[0])
                waiting.pop(0)
            except (
                GroupCoordinatorNotAvailableError,
                NotCoordinatorForGroupError,
                CoordinatorLoadInProgressError,
            ):
                if time.monotonic() > deadline:
                    log.warning("no group coordinator yet; consumers will retry", extra={"group": waiting[0]})
                    return
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def missing_topics(settings: BatonSettings, names: Iterable[str]) -> list[str]:
    """Which of ``names`` (prefixed) this principal cannot see: absent, or not described to it."""
    admin = settings.kafka.admin()
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return sorted(set(names) - existing)


async def ensure_topics(settings: BatonSettings, needed: Iterable[str]) -> list[str]:
    """What a service does at start-up: create missing topics if ``BATON_APPLY_TOPICS`` (the local
    default); if that is off, or the principal may not create topics (least privilege: a Job or
    an operator creates them), only check that the topics it needs exist, waiting if not."""
    needed = sorted(settings.topic(n) for n in needed)
    if settings.apply_topics:
        try:
            return (await apply_topics(settings)).created
        except KafkaAccessRefused as refused:
            log.info("may not create topics; checking they exist", extra={"reason": str(refused)})
    if missing := await missing_topics(settings, needed):
        raise TopicsMissing(
            f"topics missing or not visible to {settings.kafka_security.who()}: {', '.join(missing)} "
            "(`baton topics apply` as an admin creates them; `baton acls apply` grants them)"
        )
    return []


async def close_quietly(*clients: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient | None) -> None:
    """Stop clients whose ``start()`` may have failed half-way (they leak tasks otherwise)."""
    for client in clients:
        if client is None:
            continue
        with contextlib.suppress(Exception):
            if isinstance(client, AIOKafkaAdminClient):
                await client.close()
            else:
                await client.stop()
