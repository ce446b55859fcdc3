"""Catalog events, published by the catalog system; Baton's validation keeps its own copy."""

from __future__ import annotations

from pydantic import Field

from libs.contracts.envelope import Contract, Money, Text


class ProductUpdated(Contract):
    """On `catalog.products.v1`, key = sku. The latest message per sku wins."""

    sku: Text = Field(min_length=1, max_length=100)
    name: Text = Field(max_length=300)
    price: Money
    currency: Text = Field(min_length=3, max_length=3)
    active: bool = True
