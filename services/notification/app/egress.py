"""The egress guard: one check of a webhook URL, used when a subscription is made, by `baton
webhooks check-url`, and at every send (by the HTTP adapter's resolver, which connects to exactly
the addresses this judged).

The host is resolved once and every answer judged by the address rules (``domain/egress.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.notification.app.ports import Resolver, Unresolvable
from services.notification.domain import egress
from services.notification.domain.egress import EgressPolicy, IPAddress, Refused, Target


@dataclass(frozen=True)
class Allowed:
    """A webhook may go to ``target``; ``addresses`` are the ones judged, to connect to."""

    target: Target
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class Unresolved:
    """The host has no address now (or the lookup failed): nothing can be sent to it until it has."""

    target: Target
    detail: str

    def __str__(self) -> str:
        return f"dns: {self.detail}"


Verdict = Allowed | Refused | Unresolved


class EgressGuard:
    def __init__(self, policy: EgressPolicy, resolver: Resolver) -> None:
        self.policy = policy
        self._resolver = resolver

    async def check(self, url: str) -> Verdict:
        """The whole check of a URL: its form, then every address its host is or resolves to."""
        target = egress.parse(url)
        if isinstance(target, Refused):
            return target
        return await self.addresses(target)

    async def addresses(self, target: Target) -> Verdict:
        """Resolve the target's host (an IP literal is its own answer) and judge every address."""
        if target.address is not None:
            found: list[IPAddress] = [target.address]
        else:
            try:
                found = list(await self._resolver.resolve(target.host, target.port))
            except Unresolvable as exc:
                return Unresolved(target, str(exc))
        refused = egress.judge(target, found, self.policy)
        return refused or Allowed(target, tuple(found))
