"""What a service's erasure use case needs besides its own tables, as a port: the ledger of the
erasure requests applied in its schema. Driver-free, so use cases may import it; the PostgreSQL
ledger is ``libs/platform/erasure_store.py``, the in-memory one ``tests/unit/fakes/erasures.py``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from libs.contracts.privacy import Erasure, ErasureApplied, ErasureRequested


@dataclass(frozen=True)
class Erased:
    """What one service's erasure changed."""

    orders: int
    rows: int

    def __add__(self, other: Erased) -> Erased:
        return Erased(self.orders + other.orders, self.rows + other.rows)


NOTHING = Erased(0, 0)


class ErasureLedger(Protocol):
    """The erasure requests applied in this service, each once.

    An applied request keeps covering the customer's orders placed before it that reach the service
    later (still on a topic, in a dead letter replayed). ``claim`` and ``covering`` exclude each
    other: an erasure waits for the transactions that looked for erasures to end, and holds new
    ones off until it commits, so no order it covers is written unerased beside it."""

    async def claim(self, erasure: Erasure) -> bool:
        """Record the request; False when it was applied here before (then nothing is to be done)."""
        ...

    async def record(self, request_id: str, erased: Erased) -> None:
        """What applying the claimed request changed."""
        ...

    async def covering(self, customer_ids: Sequence[str]) -> list[Erasure]:
        """The applied erasures of these customers (any channel, any time: ``covers`` decides)."""
        ...


def applied(request: ErasureRequested, service: str, erased: Erased) -> ErasureApplied:
    """The outcome a service reports once it applied a request."""
    return ErasureApplied(
        request_id=request.request_id, service=service, orders=erased.orders, rows_changed=erased.rows
    )
