"""Builders for the messages channels, catalog and warehouses send — valid by default."""

from __future__ import annotations

import itertools
import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

_counter = itertools.count(1)

BERLIN = {"lat": 52.52, "lon": 13.405}


def unique_sku(name: str) -> str:
    """Skus unique to one test, so tests sharing one fleet never share stock."""
    return f"{name}-{secrets.token_hex(3)}"


def order(
    external_id: str | None = None,
    *,
    channel: str = "webshop",
    lines: list[tuple[str, int, str]] | None = None,
    country: str = "DE",
    method: str = "standard",
    customer_id: str | None = None,
    payment_status: str = "authorized",
    payment_amount: str | None = None,
    currency: str = "EUR",
    address: dict[str, Any] | None = None,
    shipping_price: str | None = None,
) -> dict[str, Any]:
    n = next(_counter)
    lines = lines or [("SKU-1", 1, "10.00")]
    total = sum((Decimal(price) * qty for _, qty, price in lines), Decimal(shipping_price or 0))
    shipping_address = {
        "name": "Ada Lovelace",
        "line1": "Unter den Linden 1",
        "city": "Berlin",
        "postal_code": "10117",
        "country": country,
        **BERLIN,
    } | (address or {})
    return {
        "channel": channel,
        "external_id": external_id or f"ext-{n}",
        "placed_at": "2026-11-27T10:00:00Z",
        "customer": {"id": customer_id or f"cust-{n}", "email": f"c{n}@example.com", "name": "Ada"},
        "shipping_address": shipping_address,
        "shipping_method": method,
        "currency": currency,
        "lines": [{"sku": sku, "quantity": qty, "unit_price": price} for sku, qty, price in lines],
        "payment": {
            "status": payment_status,
            "reference": f"pay-{n}",
            "amount": payment_amount if payment_amount is not None else str(total),
        },
    } | ({} if shipping_price is None else {"shipping_price": shipping_price})


def product(sku: str, price: str = "10.00", currency: str = "EUR", active: bool = True) -> dict[str, Any]:
    return {"sku": sku, "name": f"Product {sku}", "price": price, "currency": currency, "active": active}


def location(
    location_id: str,
    kind: str = "warehouse",
    *,
    lat: float | None = None,
    lon: float | None = None,
    countries: tuple[str, ...] = ("DE", "AT", "FR", "NL"),
    cost: str = "5.00",
    active: bool = True,
) -> dict[str, Any]:
    return {
        "location_id": location_id,
        "name": location_id,
        "kind": kind,
        "lat": lat,
        "lon": lon,
        "countries": list(countries),
        "cost_per_shipment": cost,
        "active": active,
    }


def adjustment(
    adjustment_id: str,
    sku: str,
    location_id: str,
    *,
    delta: int | None = None,
    on_hand: int | None = None,
    reason: str = "received",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "adjustment_id": adjustment_id,
        "sku": sku,
        "location_id": location_id,
        "reason": reason,
    }
    if delta is not None:
        body["delta"] = delta
    if on_hand is not None:
        body["on_hand"] = on_hand
    return body


def stage_update(
    shipment_id: str,
    stage: str,
    *,
    update_id: str | None = None,
    carrier: str | None = None,
    tracking_number: str | None = None,
    note: str | None = None,
    eta: datetime | None = None,
    exception: str | None = None,
) -> dict[str, Any]:
    """A warehouse's or carrier's update (``eta``: the carrier's expected delivery; ``exception``:
    with stage `exception`, what happened to the parcel in transit)."""
    extra = ({} if eta is None else {"eta": eta.isoformat()}) | (
        {} if exception is None else {"exception": exception}
    )
    return extra | {
        "shipment_id": shipment_id,
        "update_id": update_id or f"{shipment_id}:{stage}",
        "stage": stage,
        "occurred_at": "2026-11-27T12:00:00Z",
        "carrier": carrier,
        "tracking_number": tracking_number,
        "note": note,
    }


def erasure_request(
    customer_id: str,
    *,
    channel: str | None = "webshop",
    request_id: str | None = None,
    requested_at: str = "2026-11-28T00:00:00Z",
) -> dict[str, Any]:
    """An operator's erasure request (`baton privacy erase`); the orders above were placed before it."""
    return {
        "request_id": request_id or f"erasure-{next(_counter)}",
        "customer_id": customer_id,
        "channel": channel,
        "requested_at": requested_at,
    }
