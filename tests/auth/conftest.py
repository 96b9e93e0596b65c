from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis as redis_sync

from auth import GatewayAccessControl
from auth.backend import Backend
from auth.memory import MemoryBackend
from auth.redis_store import RedisBackend
from tests.auth.redis_cluster import RedisCluster, redis_cluster
from tests.servers import RedisServer

# Unit tests use their own database on the shared test redis-server and flush it per test.
UNIT_DB = 3


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisCluster]:
    with redis_cluster() as nodes:
        yield nodes


def _flush(kind: str, url: str, ports: list[int]) -> None:
    if kind == "redis":
        with redis_sync.Redis.from_url(url) as client:
            client.flushdb()
    elif kind == "cluster":
        for port in ports:
            with redis_sync.Redis(port=port) as client:
                # A replica-less cluster: each node flushes its own slots.
                client.flushall()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.server),
                        pytest.param("cluster", marks=pytest.mark.server)])
def store_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """Which backend the test runs against, and its URL (None for memory)."""
    kind: str = request.param
    if kind == "memory":
        return kind, None
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis")
        url = f"redis://127.0.0.1:{server.port}/{UNIT_DB}"
        _flush(kind, url, [])
        return kind, url
    nodes: RedisCluster = request.getfixturevalue("cluster")
    _flush(kind, nodes.url, nodes.ports)
    return kind, nodes.url


MakeAccess = Callable[..., Awaitable[GatewayAccessControl]]


@pytest.fixture
async def make_access(store_kind: tuple[str, str | None]) -> AsyncIterator[MakeAccess]:
    """Factory of started access controls that share one store, like gateway processes
    sharing one Redis (for memory: one shared in-process backend)."""
    kind, url = store_kind
    shared_memory = MemoryBackend()
    created: list[GatewayAccessControl] = []

    async def make(**options: Any) -> GatewayAccessControl:
        backend: Backend = shared_memory if url is None else RedisBackend(url)
        access = GatewayAccessControl(backend, **options)
        await access.start()
        created.append(access)
        return access

    yield make
    for access in created:
        await access.aclose()
