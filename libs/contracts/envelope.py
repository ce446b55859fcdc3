"""The envelope every Baton event carries, and the rules for reading untrusted input."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer


def utcnow() -> datetime:
    return datetime.now(UTC)


Money = Annotated[
    Decimal,
    Field(max_digits=14, decimal_places=4, description='A decimal string, e.g. "19.90"; never a float'),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json"),
]


class Contract(BaseModel):
    """Base for every payload: unknown fields are tolerated (contracts grow), models are immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


class Event(Contract):
    """Fields every event carries. ``event_id`` is how consumers recognise a redelivered event."""

    event_id: UUID = Field(default_factory=uuid4, description="Unique per event; duplicates share it")
    event_type: str = Field(description="What happened, e.g. `order.status-changed`")
    occurred_at: AwareDatetime = Field(default_factory=utcnow, description="When it happened (UTC)")
    schema_version: int = Field(default=1, ge=1, description="Version of this event's schema")

    def partition_key(self) -> str:
        """The Kafka message key: the aggregate's id, so one aggregate's events stay in order."""
        raise NotImplementedError(f"{type(self).__name__} names no partition key")
