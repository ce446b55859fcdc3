from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.infra import Infra, start_infra, stop_infra


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Kafka and PostgreSQL for the whole session: started here if not running, stopped here if we started them."""
    started = start_infra()
    try:
        yield started
    finally:
        stop_infra(started)
