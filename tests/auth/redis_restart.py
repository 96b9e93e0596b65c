"""A redis-server that keeps its data across a stop and start (AOF, fsync always), for the
outage tests: what a production Redis with persistence does on restart."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.servers import RedisServer, _spawn_redis, redis_server, wait_for_port

PERSISTENT = ("--appendonly", "yes", "--appendfsync", "always")


@contextlib.contextmanager
def persistent_redis() -> Iterator[RedisServer]:
    with redis_server(*PERSISTENT) as server:
        yield server


def start_again(server: RedisServer) -> None:
    """Start a stopped server on the same port and directory, with its data."""
    server.process = _spawn_redis(server.port, server.directory, *PERSISTENT)
    wait_for_port(server.port, proc=server.process)
