"""A real SMTP server (aiosmtpd) on loopback that keeps what it accepts, for tests and benchmarks."""

from __future__ import annotations

from collections import Counter
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message
from email.parser import BytesHeaderParser
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.infra import free_port

HEADERS = BytesHeaderParser()


class MailBox:
    """Keeps raw messages and counts Message-IDs; full parsing waits until a test reads `messages`."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.message_ids: Counter[str] = Counter()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.raw.append(envelope.content)
        self.message_ids[str(HEADERS.parsebytes(envelope.content, headersonly=True)["Message-ID"])] += 1
        return "250 OK"

    @property
    def messages(self) -> list[Message]:
        return [message_from_bytes(raw, policy=email_policy.default) for raw in self.raw]

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
