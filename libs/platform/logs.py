"""Structured JSON logs: one object per line, UTC time, with the order and trace ids when known.

While a record is handled its order is ``current_order_id`` (set by the platform from the record,
traced or not) and its span is the current span, so a handler's log lines carry ``order_id``,
``trace_id`` and ``span_id`` without passing them around.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import orjson
from opentelemetry import trace

current_order_id: ContextVar[str | None] = ContextVar("current_order_id", default=None)
"""The order being worked on in this task, for log lines."""

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

MIN_SECRET_LENGTH = 8
"""Shorter values are not scrubbed: replacing a word like "baton" everywhere would garble the logs."""


def scrub_list(secrets: Iterable[str | None]) -> tuple[str, ...]:
    """The values to blank out: as given, percent-encoded (inside a URL) and JSON-escaped."""
    values = {
        v
        for s in secrets
        if s and len(s) >= MIN_SECRET_LENGTH
        for v in (s, quote(s, safe=""), orjson.dumps(s).decode()[1:-1])
    }
    return tuple(sorted(values, key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class ScrubbingFormatter(logging.Formatter):
    """Plain-text lines with the process's secrets blanked out."""

    def __init__(self, fmt: str, secrets: Iterable[str | None] = ()) -> None:
        super().__init__(fmt)
        self.secrets = scrub_list(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record), self.secrets)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, secrets: Iterable[str | None] = ()) -> None:
        """``secrets`` (the database and Kafka passwords) are blanked out of every line, traceback included:
        settings never print them, but a third-party error message might quote a URL."""
        super().__init__()
        self.service = service
        self.secrets = scrub_list(secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if order_id := current_order_id.get():
            entry["order_id"] = order_id
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return scrub(orjson.dumps(entry, default=str).decode(), self.secrets)


def configure_logging(
    service: str, level: str = "INFO", json: bool = True, secrets: Iterable[str | None] = ()
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter(service, secrets))
    else:
        handler.setFormatter(
            ScrubbingFormatter(f"%(asctime)s {service} %(levelname)s %(name)s %(message)s", secrets)
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "faststream.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
