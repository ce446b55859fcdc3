"""A small shop: catalog, locations and stock, and orders drawn from it (valid, and some not)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

CITIES = [  # (city, postal code, country, lat, lon)
    ("Berlin", "10117", "DE", 52.52, 13.405),
    ("Hamburg", "20095", "DE", 53.55, 9.99),
    ("Munich", "80331", "DE", 48.14, 11.58),
    ("Paris", "75001", "FR", 48.86, 2.35),
    ("Lyon", "69001", "FR", 45.76, 4.84),
    ("Amsterdam", "1012", "NL", 52.37, 4.90),
    ("Vienna", "1010", "AT", 48.21, 16.37),
]


@dataclass(frozen=True)
class Shop:
    products: list[dict[str, Any]]
    locations: list[dict[str, Any]]
    stock: list[dict[str, Any]]


def demo_shop(skus: int = 20, units_per_location: int = 200, sku_prefix: str = "SKU") -> Shop:
    rng = random.Random(7)
    products = [
        {
            "sku": f"{sku_prefix}-{i:03d}",
            "name": f"Product {i}",
            "price": f"{rng.randint(3, 120)}.{rng.choice(['00', '50', '90', '99'])}",
            "currency": "EUR",
            "active": i != 0,
        }
        for i in range(skus)
    ]
    locations = [
        {
            "location_id": "wh-berlin",
            "name": "Berlin warehouse",
            "kind": "warehouse",
            "lat": 52.45,
            "lon": 13.5,
            "countries": ["DE", "AT", "NL", "FR"],
            "cost_per_shipment": "4.50",
            "active": True,
        },
        {
            "location_id": "store-paris",
            "name": "Paris store",
            "kind": "store",
            "lat": 48.87,
            "lon": 2.33,
            "countries": ["FR"],
            "cost_per_shipment": "3.00",
            "active": True,
        },
        {
            "location_id": "drop-rotterdam",
            "name": "Rotterdam dropshipper",
            "kind": "dropship",
            "lat": 51.92,
            "lon": 4.48,
            "countries": ["NL", "DE", "FR", "AT"],
            "cost_per_shipment": "6.00",
            "active": True,
        },
    ]
    stock = [
        {
            "adjustment_id": f"init-{loc['location_id']}-{p['sku']}",
            "sku": p["sku"],
            "location_id": loc["location_id"],
            "on_hand": units_per_location if (i + j) % 3 else units_per_location // 4,
            "reason": "initial count",
        }
        for i, p in enumerate(products)
        for j, loc in enumerate(locations)
    ]
    return Shop(products, locations, stock)


def random_order(
    rng: random.Random,
    shop: Shop,
    external_id: str,
    *,
    channel: str = "webshop",
    invalid_share: float = 0.05,
    express_share: float = 0.2,
    pickup_share: float = 0.0,
) -> dict[str, Any]:
    """A realistic order; about ``invalid_share`` of them break one validation rule on purpose, about
    ``pickup_share`` are click-and-collect at the shop's first store."""
    sold = [p for p in shop.products if p["active"]]
    picks = rng.sample(sold, k=rng.choice([1, 1, 1, 2, 2, 3]))
    lines = [
        {"sku": p["sku"], "quantity": rng.choice([1, 1, 1, 2, 3]), "unit_price": p["price"]} for p in picks
    ]
    city, postal, country, lat, lon = rng.choice(CITIES)
    total = sum(Decimal(line["unit_price"]) * line["quantity"] for line in lines)
    customer = f"cust-{rng.randint(1, 5000)}"
    order: dict[str, Any] = {
        "channel": channel,
        "external_id": external_id,
        "placed_at": "2026-11-27T10:00:00Z",
        "customer": {"id": customer, "email": f"{customer}@example.com", "name": customer.title()},
        "shipping_address": {
            "name": customer.title(),
            "line1": "Main Street 1",
            "city": city,
            "postal_code": postal,
            "country": country,
            "lat": lat,
            "lon": lon,
        },
        "shipping_method": "express" if rng.random() < express_share else "standard",
        "currency": "EUR",
        "lines": lines,
        "payment": {"status": "authorized", "reference": f"pay-{external_id}", "amount": str(total)},
    }
    stores = [loc["location_id"] for loc in shop.locations if loc["kind"] == "store"]
    if pickup_share > 0 and stores and rng.random() < pickup_share:  # no draw otherwise: seeds replay
        order |= {"shipping_method": "pickup", "pickup_location_id": stores[0]}
    if rng.random() < invalid_share:
        flaw = rng.choice(["price", "payment", "country"])
        if flaw == "price":
            order["lines"][0]["unit_price"] = "0.01"
        elif flaw == "payment":
            order["payment"]["status"] = "declined"
        else:
            order["shipping_address"]["country"] = "JP"
    return order
