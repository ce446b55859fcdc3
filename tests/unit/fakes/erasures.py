"""The erasure ledger in memory, shared by every service's fake unit of work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from libs.contracts.privacy import Erasure, customer_digest
from libs.platform.erasures import Erased


@dataclass
class FakeErasureLedger:
    """Implements ``ErasureLedger`` with a dictionary (one process: the lock has nothing to exclude)."""

    applied: dict[str, Erasure] = field(default_factory=dict)
    outcomes: dict[str, Erased] = field(default_factory=dict)

    async def claim(self, erasure: Erasure) -> bool:
        if erasure.request_id in self.applied:
            return False
        self.applied[erasure.request_id] = erasure
        return True

    async def record(self, request_id: str, erased: Erased) -> None:
        self.outcomes[request_id] = erased

    async def covering(self, customer_ids: Sequence[str]) -> list[Erasure]:
        digests = {customer_digest(c) for c in customer_ids}
        return [e for e in self.applied.values() if e.customer_digest in digests]
