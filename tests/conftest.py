from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import Gateway, RedisServer, redis_server, running_gateway


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """One real redis-server for the whole test session (tests use distinct key prefixes/dbs)."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    """A gateway with the embedded defaults (local engine, in-memory keys) and short timeouts."""
    with running_gateway(idle_timeout=3.0, auth_timeout=1.0) as gw:
        yield gw


# Test tiers (`make test-fast`): markers set at collection, see tests/tiers.py.
pytest_plugins = ("tests.tiers",)
