"""What the gateway's use cases need: somewhere to send commands, and the keys in force."""

from __future__ import annotations

from typing import Protocol

from libs.api_keys import ApiKey
from libs.contracts.orders import CancelRequested, EditRequested, OrderSubmitted


class BrokerUnavailable(Exception):
    """The broker did not acknowledge the record in time: nothing was accepted, the caller may retry."""


class OrderCommands(Protocol):
    """Orders, cancel and edit requests, each returned from only once the broker has it (acks=all)."""

    async def submit(self, order: OrderSubmitted) -> None: ...

    async def cancel(self, request: CancelRequested) -> None: ...

    async def edit(self, request: EditRequested) -> None: ...


class KeyDirectory(Protocol):
    """The channel keys in force, by the SHA-256 digest of the key."""

    def find(self, key_digest: str) -> ApiKey | None: ...

    def ready(self) -> bool:
        """Whether every key command written before start-up has been read (before that, a valid key
        could be refused)."""
        ...
