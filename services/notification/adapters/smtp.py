"""Customer e-mails over SMTP with aiosmtplib: plain by default, STARTTLS or TLS and AUTH by settings.

Each send is a client span in its order's trace (there is no maintained OpenTelemetry
instrumentation of aiosmtplib to do it)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from email.message import EmailMessage

import aiosmtplib

from libs.platform import tracing
from services.notification.app.ports import Mail
from services.notification.settings import NotificationSettings


def to_message(mail: Mail) -> EmailMessage:
    """One message to one recipient: a `To` that reads as anything but one bare address raises."""
    message = EmailMessage()
    message["From"] = mail.sender
    message["To"] = mail.recipient
    addresses = message["To"].addresses
    if len(addresses) != 1 or addresses[0].display_name or addresses[0].addr_spec != mail.recipient:
        raise ValueError(f"the recipient must be one bare address, not {len(addresses)} or a display name")
    message["Subject"] = mail.subject
    message["Message-ID"] = mail.message_id
    message.set_content(mail.body)
    return message


class AioSmtpSender:
    """Implements ``MailSender``: a batch goes over up to ``smtp_connections`` connections at once,
    each sending its share one message after another. A refused message fails alone; a connection
    that breaks is opened again for the next message."""

    def __init__(self, settings: NotificationSettings) -> None:
        self._settings = settings
        self._span_attributes = {
            "network.protocol.name": "smtp",
            "server.address": settings.smtp_host,
            "server.port": settings.smtp_port,
        }

    def _client(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.smtp_timeout_s,
            use_tls=s.smtp_tls,
            start_tls=s.smtp_starttls,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password is not None else None,
        )

    async def send(self, mails: Sequence[Mail]) -> list[str | None]:
        if not mails:
            return []
        n = min(self._settings.smtp_connections, len(mails))
        shares = await asyncio.gather(*(self._send_share(mails[i::n]) for i in range(n)))
        results: list[str | None] = [None] * len(mails)
        for offset, share in enumerate(shares):
            results[offset::n] = share
        return results

    async def _send_share(self, mails: Sequence[Mail]) -> list[str | None]:
        results: list[str | None] = []
        smtp = self._client()
        try:
            for mail in mails:
                try:
                    if not smtp.is_connected:
                        await smtp.connect()
                except (aiosmtplib.SMTPException, OSError) as exc:
                    # No connection: the rest of this share fails now rather than one timeout each.
                    results += [_error(exc)] * (len(mails) - len(results))
                    break
                with tracing.client_call("SMTP send", _order(mail), self._span_attributes):
                    try:
                        # The envelope names the one recipient itself: never derived from the headers.
                        message = to_message(mail)
                        await smtp.send_message(message, sender=mail.sender, recipients=[mail.recipient])
                        results.append(None)
                    except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
                        tracing.fail(type(exc).__qualname__)
                        results.append(_error(exc))
        finally:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()
        return results


def _order(mail: Mail) -> str | None:
    return str(mail.order_id) if mail.order_id is not None else None


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
