"""Order identity: the id Baton gives a channel's order. Pure (standard library only).

Intake assigns it when it records the order; the HTTP intake gateway answers it at once, before
intake has seen the order. Both use this one function, so the two can never disagree.
"""

from __future__ import annotations

import uuid

ORDER_NAMESPACE = uuid.UUID("6f1c2a52-8f0e-4c36-9d5b-0b7a4e1f2d90")


def order_id_for(channel: str, external_id: str) -> uuid.UUID:
    """The same channel order always gets the same id, even if intake applies it twice."""
    return uuid.uuid5(ORDER_NAMESPACE, f"{channel}:{external_id}")
