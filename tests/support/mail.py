"""A real SMTP server (aiosmtpd) on loopback that keeps what it accepts, for tests and benchmarks."""

from __future__ import annotations

from collections import Counter
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.infra import free_port


class MailBox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.message_ids: Counter[str] = Counter()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=email_policy.default)
        self.messages.append(message)
        self.message_ids[str(message["Message-ID"])] += 1
        return "250 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
