"""Webhook POSTs over aiohttp, signed the Standard Webhooks way (`domain/webhooks.py`), behind the
egress guard: a URL the guard refuses is never connected to, a connection goes only to the
addresses the guard judged (``GuardedResolver``), a redirect is never followed, no proxy from the
environment is used, and what went wrong is recorded as a generic class — never an address, a port
or an exception's text, which would make webhooks a port scanner of the internal network.

Traced, each POST is a client span (aiohttp's OpenTelemetry instrumentation) in its order's trace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from ipaddress import ip_address

import aiohttp
import orjson
from yarl import URL

from libs.platform import tracing
from services.notification.adapters.egress import EgressRefused, GuardedResolver, HostUnresolved
from services.notification.app.egress import EgressGuard, Unresolved
from services.notification.app.ports import PostOutcome
from services.notification.domain import egress
from services.notification.domain.egress import Refused
from services.notification.domain.webhooks import signatures

log = logging.getLogger("baton.notification")

EGRESS_REFUSED = "egress_refused"


class AiohttpWebhookSender:
    """Implements ``WebhookSender`` with one HTTP session per scheme for the process (open it while
    running): plain http is judged more strictly than https, so each has its own guarded resolver."""

    def __init__(self, timeout_s: float, guard: EgressGuard) -> None:
        self._timeout_s = timeout_s
        self._guard = guard
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def open(self) -> None:
        for scheme in ("http", "https"):
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._guard, scheme),
                use_dns_cache=False,  # every new connection is resolved and judged afresh
            )
            self._sessions[scheme] = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                trust_env=False,  # no HTTP(S)_PROXY: the connection goes where the guard judged
            )

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions = {}

    async def post(self, url: str, secrets: Sequence[str], webhook_id: str, body: bytes) -> PostOutcome:
        if not self._sessions:
            raise RuntimeError("the webhook sender is not open")
        started = time.monotonic()

        def outcome(status: int | None, error: str | None) -> PostOutcome:
            return PostOutcome(status, error, int((time.monotonic() - started) * 1000))

        request_url = await self._checked_url(url)
        if isinstance(request_url, str):
            return outcome(None, request_url)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures(secrets, webhook_id, timestamp, body),
        }
        session = self._sessions[request_url.scheme]
        try:
            with tracing.in_order(_order_of(body) if tracing.enabled() else None):
                async with session.post(
                    request_url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    return outcome(response.status, None)
        except Exception as exc:  # every failure is one of the classes; its text stays out of it
            return outcome(None, failure_class(exc))

    async def _checked_url(self, url: str) -> URL | str:
        """The URL to request, or the failure class: the guard's static rules, an IP literal (in
        any spelling) judged here and requested in its canonical form — aiohttp connects to a
        literal without asking the resolver — and a name left to the ``GuardedResolver``."""
        target = egress.parse(url)
        if isinstance(target, Refused):
            return EGRESS_REFUSED
        try:
            request_url = URL(url)
            if target.address is not None:
                request_url = request_url.with_host(target.host)
        except ValueError:
            return EGRESS_REFUSED
        host = request_url.raw_host or ""
        try:
            literal = ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            if literal != target.address:  # yarl and the guard read the host differently
                return EGRESS_REFUSED
            verdict = await self._guard.addresses(target)
            if isinstance(verdict, Refused):
                return EGRESS_REFUSED
            if isinstance(verdict, Unresolved):
                return "dns"
        elif target.address is not None or host.rstrip(".") != target.host.rstrip("."):
            return EGRESS_REFUSED
        return request_url


def _order_of(body: bytes) -> str | None:
    """The order a payload (`{"type", "timestamp", "data"}`) is about: its event's ``order_id``."""
    try:
        data = orjson.loads(body).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    order_id = data.get("order_id") if isinstance(data, dict) else None
    return order_id if isinstance(order_id, str) else None


def failure_class(exc: BaseException) -> str:
    """The generic class of a failed POST: what subscribers and dead letters may see."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, EgressRefused):
            return EGRESS_REFUSED
        if isinstance(exc.os_error, HostUnresolved) or isinstance(exc, aiohttp.ClientConnectorDNSError):
            return "dns"
        if isinstance(exc, aiohttp.ClientSSLError):
            return "tls"
        return "refused"
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return "tls"
    if isinstance(exc, TimeoutError):  # aiohttp's connect and read timeouts are TimeoutErrors too
        return "timeout"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return "connection"
    log.warning("webhook POST failed unexpectedly", exc_info=exc)
    return "sender_failed"
