"""A real SMTP server (aiosmtpd) on loopback that keeps what it accepts, for tests and benchmarks."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.infra import free_port

HEADERS = BytesHeaderParser()


class MailBox:
    """Keeps raw messages and counts Message-IDs; full parsing waits until a test reads `messages`."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.envelopes: list[list[str]] = []
        """The recipients of each accepted message, as the envelope named them (RCPT TO)."""
        self.message_ids: Counter[str] = Counter()
        self.port = free_port()
        self._controller = Controller(_Keeper(self), hostname="127.0.0.1", port=self.port)

    def keep(self, envelope: Any) -> None:
        self.raw.append(envelope.content)
        self.envelopes.append(list(envelope.rcpt_tos))
        self.message_ids[str(HEADERS.parsebytes(envelope.content, headersonly=True)["Message-ID"])] += 1

    @property
    def messages(self) -> list[Message]:
        return [message_from_bytes(raw, policy=email_policy.default) for raw in self.raw]

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class MailSinkProcess:
    """An SMTP sink in a process of its own, for heavy runs (chaos): a busy test process must not be
    what slows mail down. It appends one Message-ID per accepted message to a file."""

    def __init__(self, log_file: Path) -> None:
        self.port = free_port()
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.mail", str(self.port), str(self._log_file)]
        )
        deadline = time.monotonic() + 30
        while not _listening(self.port):
            if time.monotonic() > deadline:
                raise TimeoutError("SMTP sink did not start")
            time.sleep(0.1)

    @property
    def message_ids(self) -> Counter[str]:
        if not self._log_file.exists():
            return Counter()
        return Counter(line for line in self._log_file.read_text().splitlines() if line)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)


class _Keeper:
    """The aiosmtpd handler of a ``MailBox``, with nothing else on it: aiosmtpd lists every attribute
    of its handler at each connection (``inspect.getmembers``, looking for AUTH methods), and on the
    box itself that read ``messages``, parsing every message kept so far, once per connection."""

    def __init__(self, box: MailBox) -> None:
        self._box = box

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self._box.keep(envelope)
        return "250 OK"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _IdLogger:
    def __init__(self, log_file: Path) -> None:
        self._out = log_file.open("a", buffering=1)

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self._out.write(str(HEADERS.parsebytes(envelope.content, headersonly=True)["Message-ID"]) + "\n")
        return "250 OK"


if __name__ == "__main__":
    controller = Controller(_IdLogger(Path(sys.argv[2])), hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()
