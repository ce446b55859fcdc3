"""Customer e-mail rules: which statuses the customer hears about, what a message is called, when to retry. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from uuid import UUID

from libs.contracts.email import normalized_address
from libs.contracts.vocabulary import OrderStatus

EMAIL_STATUSES = frozenset(
    {
        OrderStatus.RECEIVED,
        OrderStatus.PARTIALLY_SHIPPED,
        OrderStatus.SHIPPED,
        OrderStatus.DELIVERED,
        OrderStatus.CANCELLED,
        OrderStatus.BACKORDERED,
        OrderStatus.READY_FOR_PICKUP,
        OrderStatus.REFUNDED,
    }
)
"""The statuses a customer is written to about, once each; the others are Baton's own business."""


CANCEL_WORDS = {
    "payment_timeout": " because we did not receive your payment in time",
    "payment_failed": " because your payment did not go through",
    "payment_refunded": " because your payment was refunded",
    "not_collected": " because it was not collected in time",
}
"""What a cancelled order's e-mail says about why, by reason code; other reasons say nothing more."""


def cancelled_because(codes: Iterable[str]) -> str:
    """The words after "was cancelled" for the first reason the customer should hear (or nothing)."""
    return next((CANCEL_WORDS[c] for c in codes if c in CANCEL_WORDS), "")


def tracking(numbers: Iterable[str | None]) -> str:
    """The tracking numbers known so far, or `to follow`."""
    return ", ".join(n for n in numbers if n) or "to follow"


RETURN_EMAILS = {"authorized": "return_authorized", "received": "return_refunded"}
"""Return (RMA) steps the customer is written to about, once per return: its template by status."""


def return_email(status: str, return_id: str) -> str | None:
    """The e-mail key of a return's step (`<template>/<return id>`), or None when it gets no e-mail."""
    template = RETURN_EMAILS.get(status)
    return None if template is None else f"{template}/{return_id}"


def template_of(key: str) -> str:
    """The template of an e-mail key: the status itself, or the part before `/` (one per return)."""
    return key.partition("/")[0]


def expected(eta: datetime | None) -> str:
    """The expected delivery as a customer reads it (a date, in UTC), or `to follow`."""
    return "to follow" if eta is None else eta.astimezone(UTC).strftime("%A, %d %B %Y")


def message_id(order_id: UUID, status: str) -> str:
    """Stable per order and status (and return): a message sent again is the same message. A
    return id may hold characters a Message-ID may not, so it is given as a digest."""
    template, _, instance = status.partition("/")
    if instance:
        template = f"{template}.{hashlib.sha256(instance.encode()).hexdigest()[:16]}"
    return f"<{order_id}.{template}@baton>"


def retry_delay(attempts: int) -> float:
    """After the n-th failed attempt wait 2^(n-1) seconds (1, 2, 4 … 256): a refused or unrenderable
    e-mail waits its turn without holding up the others."""
    return float(2 ** min(max(attempts - 1, 0), 8))


class Undeliverable(ValueError):
    """An e-mail that can never be sent as it is: trying again would not help."""


def recipient(address: str) -> str:
    """The one address an e-mail goes to, normalised; ``Undeliverable`` when the customer's address is
    not exactly one address (validation rejects such orders, but their `received` e-mail is due first)."""
    try:
        return normalized_address(address)
    except ValueError as exc:
        raise Undeliverable(f"not one valid address: {exc}") from None
