"""The egress guard on the network: hosts resolved with the system resolver, and an aiohttp
resolver through which every webhook connection is made — it resolves once, has the guard judge
every answer, and hands aiohttp exactly the addresses judged. There is no second lookup between
the check and the connection for a DNS answer to change in (DNS rebinding); TLS still checks the
certificate against the host name (SNI and `Host` stay the name).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from ipaddress import IPv4Address, ip_address
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

from services.notification.app.egress import EgressGuard, Unresolved
from services.notification.app.ports import Unresolvable
from services.notification.domain import egress
from services.notification.domain.egress import IPAddress, Refused


class SystemResolver:
    """Implements ``Resolver`` with the system's getaddrinfo (hosts file, search domains, DNS)."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP),
                self._timeout_s,
            )
        except TimeoutError:
            raise Unresolvable("the name lookup timed out") from None
        except OSError:
            raise Unresolvable("the name does not resolve") from None
        found: list[IPAddress] = []
        for *_, sockaddr in infos:
            address = ip_address(sockaddr[0])
            if address not in found:
                found.append(address)
        if not found:
            raise Unresolvable("the name has no address")
        return found


class EgressRefused(OSError):
    """Raised inside aiohttp's connect: the guard refused the host (aiohttp wraps it in a
    ``ClientConnectorError`` whose ``os_error`` this is)."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(str(refused))
        self.refused = refused


class HostUnresolved(OSError):
    """Raised inside aiohttp's connect: the host has no address now."""


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver for the webhook connections of one scheme (plain http is judged more
    strictly, so each scheme has its own connector): every lookup goes through the guard."""

    def __init__(self, guard: EgressGuard, scheme: str) -> None:
        self._guard = guard
        self._scheme = scheme

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        target = egress.target_of(self._scheme, host, port)
        if isinstance(target, Refused):
            raise EgressRefused(target)
        verdict = await self._guard.addresses(target)
        if isinstance(verdict, Refused):
            raise EgressRefused(verdict)
        if isinstance(verdict, Unresolved):
            raise HostUnresolved(verdict.detail)
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET if isinstance(address, IPv4Address) else socket.AF_INET6,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for address in verdict.addresses
        ]

    async def close(self) -> None:
        pass
