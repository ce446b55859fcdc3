"""Webhook rules: what a subscription wants, how a delivery is signed, when to retry. Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from collections.abc import Iterable


def wants(subscribed: Iterable[str], event_key: str) -> bool:
    """`*` takes everything; otherwise the exact key, e.g. `order.shipped` or `stage.entered:packed`."""
    keys = set(subscribed)
    return "*" in keys or event_key in keys


def secret_key(secret: str) -> bytes:
    """Standard Webhooks secrets look like `whsec_<base64>`; any other string is used as it is."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` — the Standard Webhooks signature."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, webhook_id: str, timestamp: int, body: bytes, header: str) -> bool:
    expected = sign(secret, webhook_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in header.split())


def retry_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Exponential back-off with full jitter: attempt 1 waits up to base, then 2x, 4x… never above cap."""
    ceiling = min(cap_s, base_s * (2 ** (attempt - 1)))
    return (rng or random).uniform(ceiling / 2, ceiling)


def is_success(status: int) -> bool:
    return 200 <= status < 300
