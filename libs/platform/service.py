"""Turns a service definition into a runnable FastStream app with Baton's delivery guarantees.

Every subscription becomes a faststream *batch* subscriber in the service's consumer group with
``AckPolicy.NACK_ON_ERROR``: the offsets are committed only after the batch's transaction has
committed; on a persistent failure the batch is rewound (``seek``) and consumed again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker, Topic
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage

from libs.contracts.acls import SERVICE_TOPICS, service_writes
from libs.contracts.topics import dead_letter_topic
from libs.platform import dsn, metrics, tracing
from libs.platform.db import SchemaState, create_pool, schema_state, session_settings
from libs.platform.kafka import (
    KafkaAccessRefused,
    check_access,
    ensure_topics,
    make_broker,
    wait_for_group_coordinators,
)
from libs.platform.logs import configure_logging
from libs.platform.messaging import (
    TRANSIENT_ERRORS,
    BatchHandler,
    BatchProcessor,
    Handler,
    Incoming,
    headers_dict,
)
from libs.platform.ops import OpsServer
from libs.platform.relay import OutboxRelay
from libs.platform.settings import BatonSettings

log = logging.getLogger("baton.service")

SCHEMA_POLL_S = 2.0
SCHEMA_WARN_EVERY_S = 30.0


class StartupRefused(Exception):
    """A start-up that cannot succeed; the message is the one line an operator needs."""


@dataclass(frozen=True)
class Subscription:
    """One input of a service: the topics it reads and the handler that applies one record.

    ``event_types`` filters shared topics by the ``event_type`` header before any database work.
    """

    name: str
    topics: tuple[str, ...]
    handler: Handler
    event_types: frozenset[str] | None = None
    transaction_per_record: bool = False
    """Commit each record on its own (in parallel lanes by key) instead of one transaction per batch:
    for handlers that lock shared rows (stock), where a batch would hold many locks in no global
    order and batches of two processes would deadlock."""
    batch_handler: BatchHandler | None = None
    """Applies the batch's fresh records at once (set-based SQL); ``handler`` is then unused."""
    lock_keys: Callable[[Incoming], list[str] | None] | None = None
    """With ``transaction_per_record``: the lock keys a record needs, known before applying it, so
    several records can share one transaction that takes their locks first, in key order."""


Stopper = Callable[[], Awaitable[None]]


@dataclass
class Runtime:
    """What a running service's handlers and tasks need: settings and the database pool."""

    service: str
    settings: BatonSettings
    _pool: asyncpg.Pool | None = None
    relay: OutboxRelay | None = None
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Consumer group -> topics it reads (for lag)."""
    stoppers: list[Stopper] = field(default_factory=list)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the database pool exists only while the service runs")
        return self._pool

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def committed(self) -> None:
        """Called after each committed transaction: wake the outbox relay and any listeners."""
        if self.relay is not None:
            self.relay.wake()
        for callback in self.after_commit:
            callback()


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    migrations: str
    subscriptions: Callable[[Runtime], Sequence[Subscription]]
    on_started: Callable[[Runtime], Awaitable[Stopper]] | None = None
    """Starts the service's own workers (dispatchers, HTTP) and returns how to stop them."""


def to_incoming(record: object, headers: dict[str, str] | None = None) -> Incoming:
    key = getattr(record, "key", None)
    return Incoming(
        topic=record.topic,  # type: ignore[attr-defined]
        partition=record.partition,  # type: ignore[attr-defined]
        offset=record.offset,  # type: ignore[attr-defined]
        key=key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
        value=record.value or b"",  # type: ignore[attr-defined]
        headers=headers if headers is not None else headers_dict(getattr(record, "headers", ())),
    )


async def _tolerant_parser(
    batch: tuple[Any, ...], original: Callable[[tuple[Any, ...]], Awaitable[StreamMessage[Any]]]
) -> StreamMessage[Any]:
    """faststream decodes header values as strict UTF-8; one foreign record with a bad header byte
    would fail the whole batch forever. Such headers are decoded with replacement instead."""
    try:
        return await original(batch)
    except UnicodeDecodeError:
        cleaned = tuple(
            dataclasses.replace(r, headers=[(k, v.decode("utf-8", "replace").encode()) for k, v in r.headers])
            for r in batch
        )
        return await original(cleaned)


async def _no_body(_: StreamMessage[Any]) -> None:
    """Baton reads the raw records itself; skip faststream's per-record parse and JSON decode of a
    batch body nobody uses (a fifth of a consumer's CPU in profiles)."""
    return None


def _register(broker: KafkaBroker, runtime: Runtime, subscription: Subscription) -> None:
    settings = runtime.settings
    processor = BatchProcessor(
        pool=lambda: runtime.pool,
        handler=subscription.handler,
        dead_letter_topic=settings.topic(dead_letter_topic(runtime.service)),
        on_commit=runtime.committed,
        service=runtime.service,
        subscription=subscription.name,
        lanes=settings.record_lanes if subscription.transaction_per_record else 0,
        lock_keys=subscription.lock_keys,
        batch_handler=subscription.batch_handler,
        chunk=settings.record_chunk,
    )
    wanted = subscription.event_types
    group = settings.group(runtime.service, subscription.name)
    runtime.groups[group] = tuple(settings.topic(t) for t in subscription.topics)

    async def on_batch(msg: KafkaMessage) -> None:
        raw = msg.raw_message
        batch = raw if isinstance(raw, tuple) else (raw,)
        parsed_headers = msg.batch_headers if len(msg.batch_headers) == len(batch) else None
        records = [to_incoming(r, parsed_headers[i] if parsed_headers else None) for i, r in enumerate(batch)]
        if wanted is not None:
            records = [r for r in records if r.event_type in wanted]
        await processor.process(records)

    on_batch.__name__ = f"on_{subscription.name}"
    broker.subscriber(
        # Baton creates its topics itself (partitions, retention); faststream would otherwise
        # create a missing one with a single partition, or warn where the principal may not.
        *[Topic(settings.topic(t), declare=False) for t in subscription.topics],
        batch=True,
        group_id=group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        max_poll_interval_ms=300_000,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        title=f"{runtime.service}:{subscription.name}",
        parser=_tolerant_parser,
        decoder=_no_body,
    )(on_batch)


def build_service_app(definition: ServiceDefinition, settings: BatonSettings) -> FastStream:
    """Nothing connects here: connections open in the app's start-up hook."""
    configure_logging(
        definition.name,
        settings.log_level,
        settings.log_json,
        secrets=[
            dsn.password(settings.database_url.get_secret_value()),
            settings.kafka_security.sasl_password.get_secret_value()
            if settings.kafka_security.sasl_password is not None
            else None,
        ],
    )
    tracing.configure(definition.name, settings.instance_id, settings.trace_dir)
    runtime = Runtime(service=definition.name, settings=settings)
    broker = make_broker(
        settings,
        client_id=f"baton-{definition.name}-{settings.instance_id}",
        middlewares=(
            KafkaPrometheusMiddleware(registry=metrics.REGISTRY, app_name=f"baton-{definition.name}"),
        ),
    )
    subscriptions = definition.subscriptions(runtime)
    for subscription in subscriptions:
        _register(broker, runtime, subscription)
    app = FastStream(broker, logger=logging.getLogger("faststream"))
    needed = service_topics(definition.name, subscriptions)

    @app.on_startup
    async def prepare() -> None:
        """Wait out a broker or database that is not up yet (a restart, a rollout) instead of exiting,
        and wait (up to ``schema_wait_s``) for `baton migrate` to bring the schema to this release;
        but stop at once, with one line naming the setting, when Kafka refuses our credentials or
        certificate: no amount of waiting fixes those."""
        ops = OpsServer(runtime, settings.ops_port, broker.ping)
        await ops.start()
        runtime.stoppers.append(ops.stop)
        url = settings.database_url.get_secret_value()
        schema_deadline = time.monotonic() + settings.schema_wait_s
        delay = 0.5
        while True:
            try:
                await check_access(settings.kafka)
                await ensure_topics(settings, needed)
                await await_schema(url, definition, schema_deadline, settings.schema_wait_s)
                await wait_for_group_coordinators(settings, list(runtime.groups))
                runtime._pool = await create_pool(url, definition.name, settings.db_pool_size)
                break
            except KafkaAccessRefused as refused:
                log.critical(str(refused))
                raise
            except TRANSIENT_ERRORS as exc:
                log.warning("start-up waiting for Kafka or PostgreSQL", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        runtime.relay = OutboxRelay(
            dsn=url,
            schema=definition.name,
            kafka=settings.kafka,
            client_id=f"baton-{definition.name}-relay-{settings.instance_id}",
            batch_size=settings.relay_batch_size,
            exit_after_send=settings.fault_relay_exit_after_send,
        )
        runtime.relay.start()

    @app.after_startup
    async def started() -> None:
        if definition.on_started is not None:
            runtime.stoppers.append(await definition.on_started(runtime))
        log.info("service started", extra={"instance": settings.instance_id})

    @app.after_shutdown
    async def stopped() -> None:
        for stop in reversed(runtime.stoppers):
            await stop()
        if runtime.relay is not None:
            await runtime.relay.stop()
        if runtime._pool is not None:
            await runtime._pool.close()
        tracing.shutdown()
        log.info("service stopped", extra={"instance": settings.instance_id})

    return app


NOT_MIGRATED_YET: tuple[type[Exception], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # the role does not exist yet
    asyncpg.InvalidPasswordError,  # its password is not set (or rotated) yet
    asyncpg.InvalidCatalogNameError,  # the database does not exist yet
    asyncpg.InsufficientPrivilegeError,  # no CONNECT granted yet
)
"""Log-in failures that `baton migrate` cures: during a rollout they mean "not migrated yet"."""


async def await_schema(
    url: str, definition: ServiceDefinition, deadline: float, wait_s: float
) -> SchemaState:
    """Return once the service's role can log in and its schema has every migration of this release.

    A service never migrates: in a rollout the migrate Job and the new pods start together, so the
    pods wait (live, not ready, old pods still serving) rather than crash-loop into back-off, and
    exit with one line saying what is missing if `baton migrate` has not run by ``deadline``. An
    applied migration whose file differs from this release's refuses at once: waiting cannot fix it.
    """
    schema = definition.name
    warned_at: float | None = None
    while True:
        try:
            conn = await asyncpg.connect(
                url, server_settings=session_settings(url, schema, f"baton-{schema}")
            )
        except NOT_MIGRATED_YET as exc:
            problem = f"cannot use the database as {dsn.user_name(url) or 'its role'} ({exc})"
        else:
            try:
                state = await schema_state(conn, schema, definition.migrations)
            finally:
                await conn.close()
            if state.changed:
                raise StartupRefused(
                    f"schema {schema} was migrated with other contents of {', '.join(state.changed)} than "
                    "this release ships: an applied migration was edited; restore it and add a new one"
                )
            if state.current:
                if state.newer:
                    log.info("schema is ahead of this release", extra={"newer": list(state.newer)})
                return state
            problem = (
                f"schema {schema} is not readable yet ({state.unreadable})"
                if state.unreadable
                else f"schema {schema} is behind this release: {', '.join(state.missing)} not applied"
            )
        now = time.monotonic()
        if now >= deadline:
            raise StartupRefused(
                f"{problem}; run `baton migrate --service {schema}` as the migrator "
                f"(gave up after BATON_SCHEMA_WAIT_S={wait_s:g}s)"
            )
        if warned_at is None or now - warned_at >= SCHEMA_WARN_EVERY_S:
            log.warning(
                f"{problem}; waiting for `baton migrate`",
                extra={"database": dsn.redacted(url), "gives_up_in_s": round(deadline - now)},
            )
            warned_at = now
        await asyncio.sleep(min(SCHEMA_POLL_S, max(0.0, deadline - now)))


def run_app(app: FastStream) -> int:
    """Run until stopped; returns the exit status. A start-up that cannot succeed ends with one log
    line (secrets scrubbed like every line), not a traceback on stderr."""
    import uvloop

    try:
        uvloop.run(app.run())
    except StartupRefused as exc:
        log.critical(str(exc))
        return 1
    except KafkaAccessRefused:  # logged already; the caller exits with its own status
        raise
    except Exception:
        log.critical("service failed", exc_info=True)
        return 1
    return 0


def service_topics(service: str, subscriptions: Sequence[Subscription]) -> list[str]:
    """The topics a service reads and writes (unprefixed): what it checks at start-up when it may
    not create topics. Writes come from the ACL table; a service outside it (a test probe) writes
    only its dead letters."""
    reads = {t for s in subscriptions for t in s.topics}
    writes = set(service_writes(service)) if service in SERVICE_TOPICS else {dead_letter_topic(service)}
    return sorted(reads | writes)


def consumer_groups(definition: ServiceDefinition, settings: BatonSettings) -> dict[str, tuple[str, ...]]:
    """The service's consumer groups and the topics each reads (what lag and KEDA are about)."""
    runtime = Runtime(service=definition.name, settings=settings)
    return {
        settings.group(definition.name, s.name): tuple(settings.topic(t) for t in s.topics)
        for s in definition.subscriptions(runtime)
    }
