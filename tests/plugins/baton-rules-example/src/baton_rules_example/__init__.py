"""Two validation rules a shop might add to Baton (libs.extensions.validation)."""

from __future__ import annotations

import re

from libs.extensions.validation import Finding, OrderView, RuleContext, validation_rule

PO_BOX = re.compile(r"\b(p\.?\s*o\.?\s*box|postfach|packstation)\b", re.IGNORECASE)
LIMITED_PREFIX = "LTD-"
DAILY_LIMIT = 3


@validation_rule(name="no_po_box_for_express", codes={"po_box_express"})
def no_po_box_for_express(order: OrderView, context: RuleContext) -> list[Finding]:
    """Express carriers do not deliver to PO boxes or parcel stations."""
    if order.shipping_method == "express" and any(
        PO_BOX.search(part or "") for part in (order.address.line1, order.address.line2)
    ):
        return [Finding("po_box_express", "express parcels cannot be delivered to a PO box")]
    return []


@validation_rule(name="limited_sku_daily_limit", codes={"limited_sku_daily_limit"}, uses_daily_units=True)
def limited_sku_daily_limit(order: OrderView, context: RuleContext) -> list[Finding]:
    """At most 3 units of a limited SKU (LTD-...) per customer per day."""
    findings = []
    for line in order.lines:
        if line.sku.startswith(LIMITED_PREFIX):
            already = context.units_today.get(line.sku, 0)
            if already + line.quantity > DAILY_LIMIT:
                findings.append(
                    Finding(
                        "limited_sku_daily_limit",
                        f"{line.sku} is limited to {DAILY_LIMIT} per customer per day"
                        f" ({already} already ordered today)",
                        line.sku,
                    )
                )
    return findings
