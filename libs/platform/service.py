"""Runs a service: its router's inputs as consumers, its outbox relay and workers, with Baton's
delivery guarantees, until SIGTERM drains it.

Start-up waits out a broker or database that is not up yet (a restart, a rollout) and a schema
`baton migrate` has not brought to this release yet; it stops at once, with one line naming the
setting, when Kafka refuses our credentials or certificate. Then each input of the router gets its
own consumer (consumer group ``baton.<service>.<input>``) feeding an ``InputProcessor``; offsets
are committed only after the transaction that applied the records. SIGTERM stops fetching,
finishes the poll in hand, flushes the outbox and exits within ``BATON_GRACEFUL_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg

from libs.contracts.topics import dead_letter_topic
from libs.contracts.topology import EdgeTopology, ServiceTopology
from libs.platform import dsn, tracing
from libs.platform.consumer import InputConsumer
from libs.platform.db import SchemaState, create_pool, schema_state, session_settings
from libs.platform.heap import settle_heap
from libs.platform.kafka import KafkaAccessRefused, check_access, ensure_topics, wait_for_group_coordinators
from libs.platform.logs import configure_logging
from libs.platform.ops import OpsServer
from libs.platform.processing import InputProcessor
from libs.platform.relay import OutboxRelay
from libs.platform.routing import EventRoutes, ServiceRouter
from libs.platform.settings import BatonSettings
from libs.platform.startup import when_reachable
from libs.platform.timer_worker import TimerWorker
from libs.policy import ConfigurationRefused

log = logging.getLogger("baton.service")

SCHEMA_POLL_S = 2.0
SCHEMA_WARN_EVERY_S = 30.0
READY_WITHIN_S = 15.0
"""A consumer whose last fetch answered longer ago than this makes the process not ready."""

S = TypeVar("S", bound=BatonSettings)


class StartupRefused(Exception):
    """A start-up that cannot succeed; the message is the one line an operator needs."""


Stopper = Callable[[], Awaitable[None]]


@dataclass
class Runtime:
    """What a running service's workers need: settings, the database pool, commit notifications."""

    service: str
    settings: Any
    _pool: asyncpg.Pool | None = None
    relay: OutboxRelay | None = None
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Consumer group -> topics it reads (for lag)."""
    consumers: list[InputConsumer] = field(default_factory=list)
    stoppers: list[Stopper] = field(default_factory=list)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the database pool exists only while the service runs")
        return self._pool

    def topic(self, name: str) -> str:
        return self.settings.topic(name)  # type: ignore[no-any-return]

    def committed(self) -> None:
        """Called after each committed transaction: wake the outbox relay and any listeners."""
        if self.relay is not None:
            self.relay.wake()
        for callback in self.after_commit:
            callback()

    def kafka_ready(self) -> bool:
        """Every input's consumer fetched recently (so it reaches its broker and is in its group)."""
        return bool(self.consumers) and not self.stale_inputs()

    def stale_inputs(self) -> list[str]:
        """The consumer groups whose last fetch answered too long ago (or never)."""
        return [c.group for c in self.consumers if not c.healthy(READY_WITHIN_S)]


@dataclass(frozen=True)
class ServiceDefinition(Generic[S]):
    """A service: its topology, its settings class, how to build its router, its own workers."""

    topology: ServiceTopology
    migrations: str
    settings: type[S]
    router: Callable[[S], ServiceRouter[Any]]
    workers: Callable[[Runtime], Awaitable[Stopper]] | None = None
    """Starts the service's own workers (dispatchers, HTTP) and returns how to stop them."""

    @property
    def name(self) -> str:
        return self.topology.name


@dataclass(frozen=True)
class EdgeDefinition(Generic[S]):
    """A process at Baton's edge (the HTTP gateway): no consumer group, no database, no migrations;
    it runs its own ``serve`` until ``stop`` is set (or SIGTERM) and scales on CPU."""

    topology: EdgeTopology
    settings: type[S]
    serve: Callable[[S, asyncio.Event | None], Coroutine[Any, Any, None]]
    migrations: None = None

    @property
    def name(self) -> str:
        return self.topology.name


async def serve(definition: ServiceDefinition[S], settings: S, stop: asyncio.Event | None = None) -> None:
    """Run the service until ``stop`` is set (or SIGTERM/SIGINT arrive), then drain and return."""
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
    stopping = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    try:
        settings.channel_policies()  # every service refuses a broken policy file, naming the key
        router = definition.router(settings)
    except ConfigurationRefused as refused:
        raise StartupRefused(str(refused)) from None
    bound = router.bind(settings.topic)
    runtime = Runtime(service=definition.name, settings=settings)
    runtime.groups = {settings.group(definition.name, b.name): (settings.topic(b.spec.topic),) for b in bound}
    ops = OpsServer(runtime, settings.ops_port)
    await ops.start()
    runtime.stoppers.append(ops.stop)
    try:
        await _prepare(definition, settings, runtime)
        for b in bound:
            group = settings.group(definition.name, b.name)
            processor = InputProcessor(
                service=definition.name,
                bound=b,
                pool=lambda: runtime.pool,
                dead_letter_topic=settings.topic(dead_letter_topic(definition.name)),
                on_commit=runtime.committed,
                group=group,
                lanes=settings.record_lanes,
                chunk=settings.record_chunk,
            )
            consumer = InputConsumer(
                kafka=settings.kafka,
                topic=settings.topic(b.spec.topic),
                group=group,
                processor=processor,
                client_id=definition.topology.client_id(b.name, settings.instance_id),
                max_records=settings.batch_max_records,
            )
            await consumer.start()
            runtime.consumers.append(consumer)
        if router.timer_handlers:
            timers = TimerWorker(
                service=definition.name,
                pool=lambda: runtime.pool,
                handlers=router.timer_handlers,
                unit=router.unit,
                route=EventRoutes(definition.topology, settings.topic),
                dead_letter_topic=settings.topic(dead_letter_topic(definition.name)),
                on_commit=runtime.committed,
                exit_before_commit=settings.fault_timer_exit_before_commit,
            )
            timers.start()
            runtime.stoppers.append(timers.stop)
        if definition.workers is not None:
            runtime.stoppers.append(await definition.workers(runtime))
        settle_heap()
        log.info("service started", extra={"instance": settings.instance_id})
        await stopping.wait()
        log.info("service stopping", extra={"instance": settings.instance_id})
    finally:
        await _drain(runtime, settings.graceful_timeout_s)


async def _prepare(definition: ServiceDefinition[Any], settings: BatonSettings, runtime: Runtime) -> None:
    url = settings.database_url.get_secret_value()
    topology = definition.topology
    needed = sorted({*topology.reads, *topology.writes})
    schema_deadline = time.monotonic() + settings.schema_wait_s

    async def checks() -> asyncpg.Pool:
        await check_access(settings.kafka)
        await ensure_topics(settings, needed)
        await await_schema(url, definition, schema_deadline, settings.schema_wait_s)
        await wait_for_group_coordinators(settings, list(runtime.groups))
        return await create_pool(url, definition.name, settings.db_pool_size)

    try:
        runtime._pool = await when_reachable(checks, "start-up checks")
    except KafkaAccessRefused as refused:
        log.critical(str(refused))
        raise
    runtime.relay = OutboxRelay(
        dsn=url,
        schema=definition.name,
        kafka=settings.kafka,
        client_id=topology.client_id("relay", settings.instance_id),
        batch_size=settings.relay_batch_size,
        exit_after_send=settings.fault_relay_exit_after_send,
    )
    runtime.relay.start()


async def _drain(runtime: Runtime, timeout_s: float) -> None:
    """Stop fetching and finish what is in hand, stop the workers, flush the outbox, close."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.stop() for c in runtime.consumers)), timeout_s)
    for stop in reversed(runtime.stoppers):
        with contextlib.suppress(Exception):
            await stop()
    if runtime.relay is not None:
        await runtime.relay.stop()
    if runtime._pool is not None:
        await runtime._pool.close()
    tracing.shutdown()
    log.info("service stopped", extra={"instance": runtime.settings.instance_id})


NOT_MIGRATED_YET: tuple[type[Exception], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # the role does not exist yet
    asyncpg.InvalidPasswordError,  # its password is not set (or rotated) yet
    asyncpg.InvalidCatalogNameError,  # the database does not exist yet
    asyncpg.InsufficientPrivilegeError,  # no CONNECT granted yet
)
"""Log-in failures that `baton migrate` cures: during a rollout they mean "not migrated yet"."""


async def await_schema(
    url: str, definition: ServiceDefinition[Any], deadline: float, wait_s: float
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


def run(
    definition: ServiceDefinition[Any] | EdgeDefinition[Any], settings: BatonSettings | None = None
) -> int:
    """Run until stopped; returns the exit status. A start-up that cannot succeed ends with one log
    line (secrets scrubbed like every line), not a traceback on stderr."""
    import uvloop

    try:
        chosen = settings or definition.settings()
        if isinstance(definition, EdgeDefinition):
            uvloop.run(definition.serve(chosen, None))
        else:
            uvloop.run(serve(definition, chosen))
    except StartupRefused as exc:
        log.critical(str(exc))
        return 1
    except KafkaAccessRefused:  # logged already; the caller exits with its own status
        raise
    except Exception:
        log.critical("service failed", exc_info=True)
        return 1
    return 0
