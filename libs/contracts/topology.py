"""Who reads and writes what: Baton's topology as data.

Each service declares its inputs (a topic, the consumer group that reads it, the contract types it
carries) and the events it emits. Everything else is derived from this table, never from importing
a service: where an emitted event goes (`topics_for`), the consumer groups the CLI and the KEDA
manifests know, the ACL table, the AsyncAPI document's send/receive operations.

Order facts between services travel on one topic per consuming service, `<service>.facts.v1`
(key = order id): a service fetches only the facts it handles, and all facts about one order that
it handles stay in the order they were written. A fact that two services need is written to both
topics (e.g. `order.validated` to intake, which publishes the status, and to allocation).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from libs.contracts.catalog import ProductUpdated
from libs.contracts.envelope import Contract
from libs.contracts.fulfillment import FulfillmentUpdate, StageChanged
from libs.contracts.inventory import LocationUpdated, StockAdjusted
from libs.contracts.lifecycle import (
    OrderAllocated,
    OrderBackordered,
    OrderCancelAccepted,
    OrderCancelForwarded,
    OrderCancelled,
    OrderCancelRefused,
    OrderCancelRequested,
    OrderEditAccepted,
    OrderEditForwarded,
    OrderEditRefused,
    OrderEditRequested,
    OrderEditValidated,
    OrderFact,
    OrderFulfillmentProgressed,
    OrderHeld,
    OrderPaymentChanged,
    OrderReceived,
    OrderRejected,
    OrderReserved,
    OrderValidated,
    ShipmentFailed,
    ShipmentLost,
    ShipmentShipped,
)
from libs.contracts.notification import ApiKeyChanged, RedeliveryRequested, WebhookSubscriptionChanged
from libs.contracts.orders import (
    CancellationOutcome,
    CancelRequested,
    EditOutcome,
    EditRequested,
    HoldDecision,
    OrderRefused,
    OrderStatusChanged,
    OrderSubmitted,
)
from libs.contracts.payments import PaymentUpdate
from libs.contracts.privacy import ErasureApplied, ErasureRequested
from libs.contracts.refunds import RefundRequested
from libs.contracts.returns import (
    OrderReturned,
    ReturnArrived,
    ReturnReceived,
    ReturnRequested,
    ReturnStatusChanged,
)
from libs.contracts.sla import SlaBreached
from libs.contracts.topics import (
    CATALOG_PRODUCTS,
    FULFILLMENT_SLA_BREACHES,
    FULFILLMENT_STAGE_CHANGES,
    FULFILLMENT_UPDATES,
    INVENTORY_ADJUSTMENTS,
    INVENTORY_LOCATIONS,
    NOTIFICATION_API_KEYS,
    NOTIFICATION_REDELIVERIES,
    NOTIFICATION_SUBSCRIPTIONS,
    ORDERS_CANCEL_REQUESTED,
    ORDERS_CANCELLATIONS,
    ORDERS_EDIT_REQUESTED,
    ORDERS_EDITS,
    ORDERS_HOLD_DECISIONS,
    ORDERS_REFUSED,
    ORDERS_STATUS,
    ORDERS_SUBMITTED,
    PAYMENTS_REFUND_REQUESTED,
    PAYMENTS_UPDATES,
    PRIVACY_ERASURE_REQUESTS,
    PRIVACY_ERASURES,
    RETURNS_RECEIVED,
    RETURNS_REQUESTED,
    RETURNS_STATUS,
    SERVICES,
    dead_letter_topic,
    facts_topic,
)


@dataclass(frozen=True)
class Input:
    """One input of a service: a topic read by its own consumer group, carrying these contracts."""

    name: str
    topic: str
    carries: tuple[type[Contract], ...]


@dataclass(frozen=True)
class ServiceTopology:
    name: str
    inputs: tuple[Input, ...]
    emits: tuple[type[Contract], ...]
    sends: tuple[type[Contract], ...] = ()
    """Outside commands the service publishes on an operator's behalf (the fulfillment board's
    actions): the same public commands warehouses and support send, so the topics stay outside ones."""
    observes: tuple[str, ...] = ()
    """Topics the service reads without a consumer group and commits nothing on (the board counts
    and lists dead letters, as `baton dlq list` does): read rights only, never a replay target."""

    def input(self, name: str) -> Input:
        return next(i for i in self.inputs if i.name == name)

    def input_for(self, contract: type[Contract]) -> Input:
        """The input that carries ``contract`` (each contract arrives on one input of a service)."""
        for candidate in self.inputs:
            if contract in candidate.carries:
                return candidate
        raise LookupError(f"{self.name} has no input carrying {contract.__name__}")

    def group(self, input_name: str) -> str:
        """One consumer group per input: a new member rebalances only the inputs it joins."""
        return f"baton.{self.name}.{input_name}"

    def client_id(self, role: str, instance: str) -> str:
        """The Kafka client id of one process's consumer of an input (``role`` = the input's name)
        or of its outbox relay (``role`` = ``relay``): broker logs and quotas name both."""
        return f"baton-{self.name}-{role}-{instance}"

    @property
    def groups(self) -> dict[str, str]:
        """Consumer group -> the topic it reads."""
        return {self.group(i.name): i.topic for i in self.inputs}

    @property
    def reads(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i.topic for i in self.inputs))

    @property
    def writes(self) -> tuple[str, ...]:
        """Every topic the service produces to: where its events go, and its own dead letters."""
        return (
            *dict.fromkeys(t for contract in (*self.emits, *self.sends) for t in topics_for(contract)),
            dead_letter_topic(self.name),
        )


PUBLISHED_ON: dict[type[Contract], str] = {
    OrderSubmitted: ORDERS_SUBMITTED,
    CancelRequested: ORDERS_CANCEL_REQUESTED,
    EditRequested: ORDERS_EDIT_REQUESTED,
    EditOutcome: ORDERS_EDITS,
    HoldDecision: ORDERS_HOLD_DECISIONS,
    ProductUpdated: CATALOG_PRODUCTS,
    LocationUpdated: INVENTORY_LOCATIONS,
    StockAdjusted: INVENTORY_ADJUSTMENTS,
    FulfillmentUpdate: FULFILLMENT_UPDATES,
    WebhookSubscriptionChanged: NOTIFICATION_SUBSCRIPTIONS,
    RedeliveryRequested: NOTIFICATION_REDELIVERIES,
    ApiKeyChanged: NOTIFICATION_API_KEYS,
    PaymentUpdate: PAYMENTS_UPDATES,
    OrderStatusChanged: ORDERS_STATUS,
    OrderRefused: ORDERS_REFUSED,
    CancellationOutcome: ORDERS_CANCELLATIONS,
    StageChanged: FULFILLMENT_STAGE_CHANGES,
    SlaBreached: FULFILLMENT_SLA_BREACHES,
    ReturnRequested: RETURNS_REQUESTED,
    ReturnReceived: RETURNS_RECEIVED,
    ReturnStatusChanged: RETURNS_STATUS,
    RefundRequested: PAYMENTS_REFUND_REQUESTED,
    ErasureRequested: PRIVACY_ERASURE_REQUESTS,
    ErasureApplied: PRIVACY_ERASURES,
}
"""The topic of every contract that is not an order fact: public events, and inputs from outside."""

OUTSIDE_PRODUCERS: dict[str, str] = {
    ORDERS_SUBMITTED: "channels (web shop, marketplace, phone, store POS), directly or through Baton's"
    " HTTP gateway (`POST /v1/orders`)",
    ORDERS_CANCEL_REQUESTED: "channels and customer service (also from the fulfillment board), directly or"
    " through Baton's HTTP gateway (`POST /v1/orders/{id}/cancel`)",
    ORDERS_HOLD_DECISIONS: "support, deciding on held orders (also from the fulfillment board)",
    ORDERS_EDIT_REQUESTED: "channels and customer service, changing an order before it ships, directly"
    " or through Baton's HTTP gateway (`POST /v1/orders/{id}/edit`)",
    CATALOG_PRODUCTS: "the catalog system",
    INVENTORY_LOCATIONS: "operations",
    INVENTORY_ADJUSTMENTS: "operations and warehouses (receipts, losses, counts)",
    FULFILLMENT_UPDATES: "warehouses and carriers (also operators on the fulfillment board)",
    NOTIFICATION_SUBSCRIPTIONS: "operators, with `baton webhooks add` / `remove`",
    NOTIFICATION_REDELIVERIES: "operators, with `baton webhooks redeliver` or the fulfillment board",
    PAYMENTS_UPDATES: "the payment provider (authorized, captured, failed, refunded)",
    RETURNS_REQUESTED: "channels and customer service, for a customer sending units back",
    RETURNS_RECEIVED: "warehouses receiving a returned parcel",
}
"""Who outside Baton writes the topics Baton reads from outside, in words (for the AsyncAPI document)."""


def _facts(service: str, *carries: type[OrderFact]) -> Input:
    return Input("order_facts", facts_topic(service), carries)


def _from(name: str, contract: type[Contract]) -> Input:
    return Input(name, PUBLISHED_ON[contract], (contract,))


ERASURE_REQUESTS = _from("erasure_requested", ErasureRequested)
"""Every service that keeps personal data reads the erasure requests in its own group, and reports
what it erased (``ErasureApplied``). Fulfillment keeps none (only a coarse destination), so it has
no such input."""


TOPOLOGY: tuple[ServiceTopology, ...] = (
    ServiceTopology(
        "intake",
        inputs=(
            _from("order_submitted", OrderSubmitted),
            _from("cancel_requested", CancelRequested),
            _from("edit_requested", EditRequested),
            _from("payment_updated", PaymentUpdate),
            _facts(
                "intake",
                OrderValidated,
                OrderRejected,
                OrderHeld,
                OrderAllocated,
                OrderBackordered,
                OrderCancelled,
                OrderCancelRefused,
                OrderFulfillmentProgressed,
                OrderReserved,
                OrderReturned,
                OrderEditRefused,
            ),
            ERASURE_REQUESTS,
        ),
        emits=(
            OrderStatusChanged,
            OrderRefused,
            CancellationOutcome,
            OrderReceived,
            OrderCancelRequested,
            ErasureApplied,
            EditOutcome,
            OrderEditRequested,
            OrderPaymentChanged,
        ),
    ),
    ServiceTopology(
        "validation",
        inputs=(
            _from("product_updated", ProductUpdated),
            _facts("validation", OrderReceived, OrderEditRequested),
            _from("hold_decision", HoldDecision),
            ERASURE_REQUESTS,
        ),
        emits=(
            OrderValidated,
            OrderRejected,
            OrderHeld,
            ErasureApplied,
            OrderEditValidated,
            OrderEditRefused,
        ),
    ),
    ServiceTopology(
        "allocation",
        inputs=(
            _from("location_updated", LocationUpdated),
            _from("stock_adjusted", StockAdjusted),
            _facts(
                "allocation",
                OrderValidated,
                OrderCancelRequested,
                OrderCancelAccepted,
                ShipmentShipped,
                ShipmentFailed,
                OrderPaymentChanged,
                ShipmentLost,
                ReturnArrived,
                OrderEditValidated,
                OrderEditAccepted,
            ),
            ERASURE_REQUESTS,
        ),
        emits=(
            OrderAllocated,
            OrderBackordered,
            OrderCancelled,
            OrderCancelRefused,
            OrderCancelForwarded,
            ErasureApplied,
            OrderEditForwarded,
            OrderEditRefused,
            OrderReserved,
        ),
    ),
    ServiceTopology(
        "fulfillment",
        inputs=(
            _from("location_updated", LocationUpdated),
            _facts("fulfillment", OrderAllocated, OrderCancelForwarded, OrderEditForwarded),
            _from("fulfillment_update", FulfillmentUpdate),
            _from("return_requested", ReturnRequested),
            _from("return_received", ReturnReceived),
        ),
        emits=(
            StageChanged,
            OrderFulfillmentProgressed,
            ShipmentShipped,
            ShipmentFailed,
            OrderCancelAccepted,
            OrderCancelRefused,
            SlaBreached,
            ShipmentLost,
            RefundRequested,
            ReturnStatusChanged,
            ReturnArrived,
            OrderReturned,
            OrderEditAccepted,
            OrderEditRefused,
        ),
    ),
    ServiceTopology(
        "notification",
        inputs=(
            _from("subscription_changed", WebhookSubscriptionChanged),
            _from("redelivery_requested", RedeliveryRequested),
            _from("api_key_changed", ApiKeyChanged),
            _facts("notification", OrderReceived),
            _from("status_changed", OrderStatusChanged),
            _from("stage_changed", StageChanged),
            _from("return_status_changed", ReturnStatusChanged),
            _from("sla_breached", SlaBreached),
            ERASURE_REQUESTS,
        ),
        emits=(ErasureApplied,),
        sends=(FulfillmentUpdate, HoldDecision, CancelRequested, RedeliveryRequested),
        observes=tuple(dead_letter_topic(s) for s in SERVICES),
    ),
)

SERVICE_TOPOLOGY: dict[str, ServiceTopology] = {s.name: s for s in TOPOLOGY}
assert tuple(SERVICE_TOPOLOGY) == SERVICES


def consumers_of(contract: type[Contract]) -> tuple[str, ...]:
    """The services whose facts topic carries ``contract``."""
    return tuple(
        s.name for s in TOPOLOGY for i in s.inputs if i.topic == facts_topic(s.name) and contract in i.carries
    )


def topics_for(contract: type[Contract]) -> tuple[str, ...]:
    """Where an event of this type is published: its public topic, or every consumer's facts topic."""
    if contract in PUBLISHED_ON:
        return (PUBLISHED_ON[contract],)
    consumers = consumers_of(contract)
    if not consumers:
        raise LookupError(
            f"nobody consumes {contract.__name__}: add it to a service's inputs or PUBLISHED_ON"
        )
    return tuple(facts_topic(c) for c in consumers)


def erasers() -> tuple[str, ...]:
    """The services that apply erasure requests: each reports once per request."""
    return tuple(s.name for s in TOPOLOGY if ERASURE_REQUESTS in s.inputs)


def producers_of(topic: str) -> tuple[str, ...]:
    """The services that write to ``topic``."""
    return tuple(s.name for s in TOPOLOGY if topic in s.writes)


OUTSIDE_CONTRACTS: tuple[type[Contract], ...] = tuple(
    c for c in PUBLISHED_ON if not any(c in s.emits for s in TOPOLOGY)
)
"""Contracts no Baton service emits: channels, the catalog, warehouses, carriers, support tools and
the operators' commands write them."""


def written_only_by_baton(topic: str) -> bool:
    """Whether only Baton's services produce ``topic``: the facts topics, `orders.status.v1`,
    `fulfillment.stage-changes.v1`, ... (the operator's `baton dlq replay` sends a record back where
    it came from, unchanged). Only there is a record's ``event_id`` header Baton's own, so only
    there does the inbox recognise a re-sent event by it; everywhere else a producer chose it."""
    return bool(producers_of(topic)) and topic not in {PUBLISHED_ON[c] for c in OUTSIDE_CONTRACTS}


@dataclass(frozen=True)
class EdgeTopology:
    """A process at Baton's edge that consumes nothing in a consumer group: it writes outsiders'
    contracts on their behalf (so those topics keep their outside producers) and follows store topics,
    read whole from their beginning by every process without a group."""

    name: str
    emits: tuple[type[Contract], ...]
    follows: tuple[str, ...]

    @property
    def writes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for contract in self.emits for t in topics_for(contract)))


GATEWAY = EdgeTopology(
    "gateway",
    emits=(OrderSubmitted, CancelRequested, EditRequested),
    follows=(PUBLISHED_ON[ApiKeyChanged],),
)
"""The HTTP intake gateway (`baton run gateway`): orders, cancel and edit requests over HTTP,
checked against the channel keys it follows on the compacted `notification.api-keys.v1`."""

EDGES: tuple[EdgeTopology, ...] = (GATEWAY,)


def consumer_groups(services: Iterable[str] = SERVICES) -> dict[str, str]:
    """Every consumer group of these services and the topic it reads (unprefixed)."""
    return {group: topic for name in services for group, topic in SERVICE_TOPOLOGY[name].groups.items()}
