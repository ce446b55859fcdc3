"""Webhook POSTs over aiohttp, signed the Standard Webhooks way (`domain/webhooks.py`).

Traced, each POST is a client span (aiohttp's OpenTelemetry instrumentation) in its order's trace."""

from __future__ import annotations

import time

import aiohttp
import orjson

from libs.platform import tracing
from services.notification.app.ports import PostOutcome
from services.notification.domain.webhooks import sign


class AiohttpWebhookSender:
    """Implements ``WebhookSender`` with one HTTP session for the process (open it while running)."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, secret: str, webhook_id: str, body: bytes) -> PostOutcome:
        if self._session is None:
            raise RuntimeError("the webhook sender is not open")
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, webhook_id, timestamp, body),
        }
        started = time.monotonic()
        try:
            with tracing.in_order(_order_of(body) if tracing.enabled() else None):
                async with self._session.post(url, data=body, headers=headers) as response:
                    status: int | None = response.status
                    error = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"[:500]
        return PostOutcome(status, error, int((time.monotonic() - started) * 1000))


def _order_of(body: bytes) -> str | None:
    """The order a payload (`{"type", "timestamp", "data"}`) is about: its event's ``order_id``."""
    try:
        data = orjson.loads(body).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    order_id = data.get("order_id") if isinstance(data, dict) else None
    return order_id if isinstance(order_id, str) else None
