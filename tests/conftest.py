from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.infra import Infra, start_infra, start_secure_infra, stop_infra


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Kafka and PostgreSQL for the whole session: started here if not running, stopped here if we started them."""
    started = start_infra()
    try:
        yield started
    finally:
        stop_infra(started)


@pytest.fixture(scope="session")
def secure_infra(infra: Infra) -> Iterator[Infra]:
    """The secured local broker (SASL_SSL, SCRAM, ACLs) beside the plain one, on its own ports and data:
    started here if not running, stopped here if we started it. The tests' own clients are the admin."""
    secured = start_secure_infra(infra)
    try:
        yield secured
    finally:
        stop_infra(secured)
