"""One typed router per service: handlers registered by the contract types they handle.

A handler takes parsed contract objects and the service's unit of work (its storage ports) and
returns the contract events it caused. The router does the rest, from the topology data: it
parses records into contracts (a record that cannot be read is rejected with the reason), knows
which input (topic, consumer group) carries each type, sends each returned event to the topics its
type goes to with its partition key, and refuses an event type the service does not declare.

    router = ServiceRouter(SERVICE_TOPOLOGY["allocation"], PgAllocationUnit)

    @router.on_batch(OrderValidated, shape=LockedChunks(keys=lambda e: e.skus))
    async def allocate(events: Sequence[OrderValidated], uow: AllocationUnit) -> list[Outcome]: ...

A *record handler* (``on``) returns the events of one contract object; a *batch handler*
(``on_batch``) gets consecutive objects of its types at once (set-based SQL) and returns one
outcome per object, in order: its events, or ``Rejected`` when it can never be applied. Records of
one input keep their order: consecutive objects of the same handler form one call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
import orjson
from pydantic import TypeAdapter, ValidationError

from libs.contracts.envelope import Contract, Event
from libs.contracts.topology import Input, ServiceTopology, topics_for, written_only_by_baton
from libs.platform.messaging import Incoming, Outgoing, Rejected

U = TypeVar("U")

Events = Sequence[Event]
Outcome = Events | Rejected
RecordHandler = Callable[[Any, U], Awaitable[Events]]
BatchHandler = Callable[[Sequence[Any], U], Awaitable[Sequence[Outcome]]]
HandlerScope = Callable[[Sequence[Incoming]], AbstractContextManager[object]]
"""Entered around each handler call with the records it is given (the platform's tracing and log context)."""


def _unscoped(records: Sequence[Incoming]) -> AbstractContextManager[object]:
    return nullcontext()


@dataclass(frozen=True)
class WholeBatch:
    """One transaction for all the records of a poll: the fewest commits. For handlers whose
    writes never wait on another process's locks (or wait in an order that cannot deadlock)."""


@dataclass(frozen=True)
class KeyedLanes:
    """One transaction per record, records of different keys in parallel lanes (one key always in
    one lane, in order). For handlers that lock shared rows found only while applying."""


@dataclass(frozen=True)
class LockedChunks:
    """Records whose lock keys ``keys(obj)`` names up front share a transaction (up to
    ``BATON_RECORD_CHUNK`` of them, in poll order, one chunk after the other) that takes all their
    key locks first, in key order: transactions of several processes then wait for each other but
    never deadlock. ``keys`` returns None for an object whose keys are not known beforehand; such a
    record gets a transaction of its own."""

    keys: Callable[[Any], Sequence[str] | None]


Shape = WholeBatch | KeyedLanes | LockedChunks


@dataclass(frozen=True)
class Registration:
    contracts: tuple[type[Contract], ...]
    handler: Callable[..., Awaitable[Any]]
    batch: bool


@dataclass(frozen=True)
class Item:
    """A record, what it became (the contract object, or why it cannot be read), and its inbox id."""

    record: Incoming
    parsed: Contract | Rejected
    message_id: str


class EventRoutes:
    """Where a service's events go: each to every topic its type goes to (the environment's names),
    keyed by its partition key; a type the service does not declare is refused."""

    def __init__(self, service: ServiceTopology, topic: Callable[[str], str] = str) -> None:
        self._service = service
        self._topic = topic
        self._emits = frozenset(service.emits)
        self._routes: dict[type[Contract], tuple[str, ...]] = {}

    def __call__(self, events: Events) -> list[Outgoing]:
        out: list[Outgoing] = []
        for event in events:
            kind = type(event)
            if kind not in self._emits:
                raise TypeError(f"{self._service.name} does not declare that it emits {kind.__name__}")
            topics = self._routes.get(kind)
            if topics is None:
                topics = self._routes[kind] = tuple(self._topic(t) for t in topics_for(kind))
            out.extend(Outgoing.events(topics, event.partition_key(), event, producer=self._service.name))
        return out


class BoundInput(Generic[U]):
    """One input of a service with its handlers: parses its records and applies them."""

    def __init__(
        self,
        service: ServiceTopology,
        spec: Input,
        registrations: Sequence[Registration],
        shape: Shape,
        unit: Callable[[asyncpg.Connection], U],
        topic: Callable[[str], str] = str,
    ) -> None:
        self.service = service
        self.route = EventRoutes(service, topic)
        self.spec = spec
        self.shape = shape
        self._unit = unit
        self._by_type = {c: r for r in registrations for c in r.contracts}
        self._by_name = {_type_name(c): c for c in spec.carries}
        self._adapters: dict[type[Contract], TypeAdapter[Any]] = {c: TypeAdapter(c) for c in spec.carries}
        self._single = spec.carries[0] if len(spec.carries) == 1 else None
        self.trusts_event_ids = written_only_by_baton(spec.topic)
        """Only Baton's services write this input: a record's ``event_id`` header identifies it."""

    @property
    def name(self) -> str:
        return self.spec.name

    def wants(self, record: Incoming) -> bool:
        """Whether the record is for this input: a Baton event names its type in a header; records
        of types this input does not carry (a producer newer than this service) are skipped."""
        kind = record.event_type
        return self._single is not None or kind is None or kind in self._by_name

    def parse(self, record: Incoming) -> Item:
        """Read an untrusted record into its contract, or a rejection a person can act on."""
        message_id = record.message_id(trust_event_id=self.trusts_event_ids)
        contract = self._single or self._by_name.get(record.event_type or "") or self._sniff(record)
        if contract is None:
            rejected = Rejected("unknown_event_type", f"{record.event_type!r} is not handled here")
            return Item(record, rejected, message_id)
        try:
            return Item(record, self._adapters[contract].validate_json(record.value), message_id)
        except ValidationError as exc:
            return Item(record, _rejection(exc), message_id)

    def _sniff(self, record: Incoming) -> type[Contract] | None:
        """No ``event_type`` header (a hand-made record): read the type from the body."""
        try:
            body = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            return next(iter(self._adapters))  # parsed, and rejected as invalid_json, by the first
        kind = body.get("event_type") if isinstance(body, dict) else None
        return self._by_name.get(kind) if isinstance(kind, str) else None

    def lock_keys(self, item: Item) -> Sequence[str] | None:
        if not isinstance(self.shape, LockedChunks) or isinstance(item.parsed, Rejected):
            return None
        return self.shape.keys(item.parsed)

    async def apply(
        self, conn: asyncpg.Connection, items: Sequence[Item], scope: HandlerScope = _unscoped
    ) -> list[list[Outgoing] | Rejected]:
        """Apply parsed items in order (runs of one handler in one call); one result per item."""
        unit = self._unit(conn)
        results: list[list[Outgoing] | Rejected] = []
        start = 0
        while start < len(items):
            registration = self._registration(items[start])
            end = start + 1
            if registration is not None and registration.batch:
                while end < len(items) and self._registration(items[end]) is registration:
                    end += 1
            run = items[start:end]
            results.extend(await self._apply_run(registration, run, unit, scope))
            start = end
        return results

    def _registration(self, item: Item) -> Registration | None:
        parsed = item.parsed
        return None if isinstance(parsed, Rejected) else self._by_type.get(type(parsed))

    async def _apply_run(
        self, registration: Registration | None, run: Sequence[Item], unit: U, scope: HandlerScope
    ) -> list[list[Outgoing] | Rejected]:
        if registration is None:  # an unreadable record, or a type carried but deliberately not handled
            return [item.parsed if isinstance(item.parsed, Rejected) else [] for item in run]
        if registration.batch:
            with scope([item.record for item in run]):
                outcomes = await registration.handler([item.parsed for item in run], unit)
            if len(outcomes) != len(run):
                raise RuntimeError(
                    f"{registration.handler.__name__} returned {len(outcomes)} outcomes for {len(run)}"
                )
        else:
            outcomes = []
            for item in run:
                with scope([item.record]):
                    try:
                        outcomes.append(await registration.handler(item.parsed, unit))
                    except Rejected as rejected:
                        outcomes.append(rejected)
        return [o if isinstance(o, Rejected) else self.route(o) for o in outcomes]


@dataclass
class ServiceRouter(Generic[U]):
    """The handlers of one service, by contract type; ``bind()`` checks them against the topology."""

    topology: ServiceTopology
    unit: Callable[[asyncpg.Connection], U]
    _registrations: list[tuple[Registration, Shape | None]] = field(default_factory=list)
    _timers: dict[str, Callable[..., Awaitable[Events]]] = field(default_factory=dict)

    def on_timer(self, kind: str) -> Callable[[Any], Any]:
        """Register the handler of a durable timer kind (``libs/platform/timers.py``): it gets the
        due ``Timer`` and the unit of work and returns the events it caused."""

        def decorate(handler: Callable[..., Awaitable[Events]]) -> Callable[..., Awaitable[Events]]:
            if kind in self._timers:
                raise ValueError(f"two handlers for timer {kind!r}")
            self._timers[kind] = handler
            return handler

        return decorate

    @property
    def timer_handlers(self) -> dict[str, Callable[..., Awaitable[Events]]]:
        return dict(self._timers)

    def on(self, *contracts: type[Contract], shape: Shape | None = None) -> Callable[[Any], Any]:
        """Register a handler of one object at a time."""
        return self._register(contracts, shape, batch=False)

    def on_batch(self, *contracts: type[Contract], shape: Shape | None = None) -> Callable[[Any], Any]:
        """Register a set-based handler of consecutive objects of these types."""
        return self._register(contracts, shape, batch=True)

    def _register(
        self, contracts: tuple[type[Contract], ...], shape: Shape | None, batch: bool
    ) -> Callable[[Any], Any]:
        def decorate(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            self._registrations.append((Registration(contracts, handler, batch), shape))
            return handler

        return decorate

    def bind(self, topic: Callable[[str], str] = str) -> list[BoundInput[U]]:
        """The service's inputs with their handlers. Every handled type must arrive on an input of
        the service, and every type its inputs carry must have a handler: a mismatch between code
        and topology fails at start-up (and in the tests), not by silently dropping records.
        ``topic`` turns a topic name into the environment's (``BATON_TOPIC_PREFIX``)."""
        by_input: dict[str, list[tuple[Registration, Shape | None]]] = {}
        for registration, shape in self._registrations:
            names = {self.topology.input_for(c).name for c in registration.contracts}
            if len(names) != 1:
                raise ValueError(
                    f"{registration.handler.__name__}: its types arrive on several inputs {names}"
                )
            by_input.setdefault(names.pop(), []).append((registration, shape))
        bound = []
        for spec in self.topology.inputs:
            registered = by_input.get(spec.name, [])
            handled = {c for r, _ in registered for c in r.contracts}
            if missing := [c.__name__ for c in spec.carries if c not in handled]:
                raise ValueError(f"{self.topology.name}.{spec.name}: no handler for {', '.join(missing)}")
            shapes = {s for _, s in registered if s is not None}
            if len(shapes) > 1:
                raise ValueError(
                    f"{self.topology.name}.{spec.name}: handlers ask for different shapes {shapes}"
                )
            shape = shapes.pop() if shapes else WholeBatch()
            bound.append(BoundInput(self.topology, spec, [r for r, _ in registered], shape, self.unit, topic))
        return bound


def _type_name(contract: type[Contract]) -> str:
    """The ``event_type`` a contract carries (its literal default), or its class name."""
    field_info = contract.model_fields.get("event_type")
    default = field_info.default if field_info is not None else None
    return default if isinstance(default, str) else contract.__name__


def _rejection(exc: ValidationError) -> Rejected:
    errors = exc.errors(include_url=False, include_input=False)
    cause = "invalid_json" if any(e["type"] == "json_invalid" for e in errors) else "schema_violation"
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors[:20])
    return Rejected(cause, detail)
