"""The tests' and benchmark's SMTP sink keeps mail without parsing it at every connection."""

from __future__ import annotations

import smtplib
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest

from tests.support import mail as mail_module
from tests.support.mail import MailBox

pytestmark = pytest.mark.unit


def test_a_new_connection_does_not_parse_the_mail_kept_so_far(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []

    def counting_parse(raw: bytes, **kwargs: Any) -> Message:
        parsed.append(raw)
        return message_from_bytes(raw, **kwargs)

    monkeypatch.setattr(mail_module, "message_from_bytes", counting_parse)
    box = MailBox()
    box.start()
    try:
        for n in range(3):  # one connection each, as a sender with one mail per session makes
            with smtplib.SMTP("127.0.0.1", box.port, timeout=10) as client:
                client.sendmail(
                    "orders@baton.test",
                    [f"c{n}@example.test"],
                    f"Message-ID: <m{n}@baton>\r\nSubject: order {n}\r\n\r\nHello\r\n",
                )
        assert parsed == []
        assert sorted(box.message_ids) == ["<m0@baton>", "<m1@baton>", "<m2@baton>"]
        assert box.envelopes == [["c0@example.test"], ["c1@example.test"], ["c2@example.test"]]
        assert [m["Subject"] for m in box.messages] == ["order 0", "order 1", "order 2"]
        assert len(parsed) == 3
    finally:
        box.stop()
