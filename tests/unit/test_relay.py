"""The outbox relay's own rules."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from libs.platform.relay import KeyHashes

pytestmark = pytest.mark.unit


def test_the_relay_partitions_keys_exactly_as_kafka_clients_do() -> None:
    """Channels and downstream teams use other clients: an order's key must land where theirs do."""
    hashes = KeyHashes(size=3)
    partitions = list(range(8))
    for key in [f"order-{n}".encode() for n in range(50)] * 2:
        assert hashes(key, partitions, partitions) == DefaultPartitioner()(key, partitions, partitions)
