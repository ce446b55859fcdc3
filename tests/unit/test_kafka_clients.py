"""Every Kafka client is made by the one factory (``settings.kafka`` / ``KafkaAccess``), so the
security settings reach it: a client built by hand would connect without TLS or login and fail
only on a secured cluster."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BY_HAND = re.compile(r"\bAIOKafka(Producer|Consumer|AdminClient)\(|(?<![\w.])bootstrap_servers=")


def test_no_kafka_client_is_built_outside_the_factory() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("libs", "services", "tests", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if BY_HAND.search(line) and "**self.options(" not in line  # the factory itself
    ]
    assert offenders == [], (
        "build Kafka clients with settings.kafka.producer()/consumer()/admin():\n" + "\n".join(offenders)
    )
