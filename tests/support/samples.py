"""One valid message of every contract a service reads, with every optional text field filled in.

The contract tests put hostile text into each of their fields, and the fuzz tests mutate them; a
contract added to an input without a sample here fails `test_every_input_contract_has_a_sample`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

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
    CancelRequested,
    EditRequested,
    HoldDecision,
    OrderDetails,
    OrderStatus,
    OrderStatusChanged,
    OrderSubmitted,
    Reason,
    Shipment,
    ShipmentLine,
)
from libs.contracts.payments import PaymentUpdate
from libs.contracts.privacy import ErasureRequested
from libs.contracts.returns import (
    OrderReturned,
    ReceivedLine,
    ReturnArrived,
    ReturnLine,
    ReturnReceived,
    ReturnRequested,
    ReturnStatusChanged,
)
from libs.contracts.sla import SlaBreached
from libs.contracts.vocabulary import ReturnCondition, ReturnStatus
from tests.support.orders import location, order, product, stage_update

ORDER_ID = UUID("5b0c2a52-3f4e-4f5a-9d39-3c7a4c1f0a11")
AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _details() -> OrderDetails:
    return OrderDetails.model_validate(order("ext-sample", address={"line2": "Hinterhaus"}))


def _shipment() -> Shipment:
    return Shipment(
        shipment_id="shp-1",
        location_id="wh-1",
        lines=[ShipmentLine(sku="SKU-1", quantity=1)],
        pipeline="standard",
        stage="new",
        carrier="DHL",
        tracking_number="JJD0001",
    )


def _reasons() -> list[Reason]:
    return [Reason(code="unknown_sku", message="SKU-1 is not in the catalog", sku="SKU-1")]


def _samples() -> dict[type[Contract], Contract]:
    details = _details()
    line = [ShipmentLine(sku="SKU-1", quantity=1)]
    facts: list[Contract] = [
        OrderReceived(order_id=ORDER_ID, order=details),
        OrderValidated(order_id=ORDER_ID, order=details),
        OrderRejected(order_id=ORDER_ID, reasons=_reasons()),
        OrderHeld(order_id=ORDER_ID, reasons=_reasons()),
        OrderAllocated(
            order_id=ORDER_ID,
            shipments=[_shipment()],
            order=details,
            cancel_request_id="req-1",
            backordered_lines=line,
        ),
        OrderBackordered(order_id=ORDER_ID, reasons=_reasons()),
        OrderCancelRequested(order_id=ORDER_ID, request_id="req-1", lines=line, reason="changed mind"),
        OrderCancelForwarded(order_id=ORDER_ID, request_id="req-1", lines=line, reason="changed mind"),
        OrderCancelAccepted(
            order_id=ORDER_ID,
            request_id="req-1",
            lines=line,
            reason="changed mind",
            release=[_shipment()],
            whole=False,
        ),
        OrderCancelRefused(order_id=ORDER_ID, request_id="req-1", reason="changed mind", reasons=_reasons()),
        OrderCancelled(order_id=ORDER_ID, request_id="req-1", reasons=_reasons()),
        OrderFulfillmentProgressed(order_id=ORDER_ID, status="shipped", shipments=[_shipment()], eta=AT),
        OrderEditRequested(order_id=ORDER_ID, request_id="ed-1", order=details),
        OrderEditValidated(order_id=ORDER_ID, request_id="ed-1", order=details),
        OrderEditForwarded(order_id=ORDER_ID, request_id="ed-1", order=details),
        OrderEditAccepted(order_id=ORDER_ID, request_id="ed-1", order=details, release=[_shipment()]),
        OrderEditRefused(order_id=ORDER_ID, request_id="ed-1", reasons=_reasons()),
        ShipmentShipped(order_id=ORDER_ID, shipment_id="shp-1", location_id="wh-1", lines=line),
        ShipmentFailed(
            order_id=ORDER_ID, shipment_id="shp-1", location_id="wh-1", lines=line, reason="damaged"
        ),
        OrderPaymentChanged(order_id=ORDER_ID, payment_event_id="pay-evt-1", status="authorized"),
        OrderReserved(order_id=ORDER_ID, shipments=[_shipment()], expires_at=AT),
        ShipmentLost(
            order_id=ORDER_ID,
            shipment_id="shp-1",
            location_id="wh-1",
            lines=line,
            exception="lost",
            reship=True,
        ),
        ReturnArrived(order_id=ORDER_ID, return_id="rma-1", location_id="wh-1", restock=line, write_off=line),
        OrderReturned(order_id=ORDER_ID, status="partially_returned", return_id="rma-1", lines=line),
    ]
    returned = [ReturnLine(sku="SKU-1", quantity=1)]
    received = [ReceivedLine(sku="SKU-1", quantity=1, condition=ReturnCondition.RESELLABLE)]
    outside: list[Contract] = [
        OrderSubmitted.model_validate(order("ext-sample", address={"line2": "Hinterhaus"})),
        CancelRequested(
            request_id="req-1", channel="webshop", external_id="ext-sample", lines=line, reason="changed mind"
        ),
        PaymentUpdate(
            payment_event_id="pay-evt-1",
            channel="webshop",
            external_id="ext-sample",
            status="authorized",
            reference="psp-123",
            occurred_at=AT,
        ),
        HoldDecision(order_id=ORDER_ID, decision="release", decided_by="support-7", reason="known customer"),
        EditRequested(
            request_id="ed-1",
            channel="webshop",
            external_id="ext-sample",
            shipping_address=details.shipping_address,
            lines=details.lines,
            payment=details.payment,
            reason="moved house",
        ),
        ProductUpdated.model_validate(product("SKU-1")),
        LocationUpdated.model_validate(location("wh-1", lat=52.5, lon=13.4)),
        StockAdjusted(adjustment_id="adj-1", sku="SKU-1", location_id="wh-1", delta=5, reason="received"),
        FulfillmentUpdate.model_validate(
            stage_update("shp-1", "shipped", carrier="DHL", tracking_number="JJD0001", note="left the dock")
        ),
        WebhookSubscriptionChanged(
            action="add",
            subscription_id="sub-1",
            url="https://hooks.example.com/baton",
            secret="whsec_c2VjcmV0LXNlY3JldA==",
            events=["order.shipped", "stage.entered:packed"],
        ),
        RedeliveryRequested(delivery_id="msg_1", subscription_id="sub-1"),
        ErasureRequested(request_id="erasure-1", customer_id="cust-42", channel="webshop", requested_at=AT),
        ApiKeyChanged(
            action="add", key_id="key_1", name="support desk", key_hash="ab" * 32, channels=["webshop", "pos"]
        ),
        OrderStatusChanged(
            order_id=ORDER_ID,
            channel="webshop",
            external_id="ext-sample",
            status=OrderStatus.SHIPPED,
            version=5,
            reasons=_reasons(),
            shipments=[_shipment()],
            eta=AT,
        ),
        StageChanged(
            order_id=ORDER_ID,
            shipment_id="shp-1",
            pipeline="standard",
            left_stage="packed",
            entered_stage="shipped",
            change="moved",
            reason="scanned",
        ),
        SlaBreached(
            order_id=ORDER_ID,
            shipment_id="shp-1",
            pipeline="standard",
            stage="picking",
            sla_hours=24,
            stage_entered_at=AT,
            due_at=AT,
            overdue_seconds=60,
            eta=AT,
        ),
        ReturnRequested(return_id="rma-1", order_id=ORDER_ID, lines=returned, reason="too small"),
        ReturnReceived(return_id="rma-1", location_id="wh-1", lines=received),
        ReturnStatusChanged(
            return_id="rma-1",
            order_id=ORDER_ID,
            status=ReturnStatus.RECEIVED,
            lines=returned,
            reasons=_reasons(),
            location_id="wh-1",
            received=received,
            refund="19.90",
            currency="EUR",
        ),
    ]
    return {type(sample): sample for sample in (*facts, *outside)}


SAMPLES: dict[type[Contract], Contract] = _samples()


def sample_json(contract: type[Contract]) -> dict[str, Any]:
    """The sample as the JSON a producer sends (money as strings, ids as strings)."""
    parsed: dict[str, Any] = orjson.loads(SAMPLES[contract].model_dump_json())
    return parsed


def text_paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The path of every string in a JSON value (dict keys and list indexes)."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in text_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in text_paths(v, (*path, i))]
    return []


def replaced(value: Any, path: tuple[str | int, ...], new: Any) -> Any:
    """A copy of ``value`` with the element at ``path`` replaced by ``new``."""
    if not path:
        return new
    head, *rest = path
    if isinstance(value, dict):
        return {k: replaced(v, tuple(rest), new) if k == head else v for k, v in value.items()}
    return [replaced(v, tuple(rest), new) if i == head else v for i, v in enumerate(value)]


__all__ = ["SAMPLES", "replaced", "sample_json", "text_paths"]
