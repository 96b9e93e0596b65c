"""Redis outages: 4503 by default, recently validated keys from the cache, fail-open limits,
usage kept through a restart and written when Redis is back, leases re-created."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as redis_sync

from auth import AccessDenied, GatewayAccessControl, keys
from auth.redis_store import RedisBackend
from tests.auth.redis_restart import persistent_redis, start_again
from tests.servers import RedisServer

MODEL = "local.tiny.en"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test may stop and start; it keeps its data (AOF) across restarts."""
    with persistent_redis() as server:
        yield server


@pytest.fixture
async def access_on(own_redis: RedisServer) -> AsyncIterator[list[GatewayAccessControl]]:
    created: list[GatewayAccessControl] = []
    yield created
    for access in created:
        await access.aclose()


async def _start(created: list[GatewayAccessControl], url: str,
                 **options: object) -> GatewayAccessControl:
    access = GatewayAccessControl(RedisBackend(url), **options)  # type: ignore[arg-type]
    await access.start()
    created.append(access)
    return access


async def _eventually(check: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_store_down_at_session_start(own_redis: RedisServer,
                                           access_on: list[GatewayAccessControl]) -> None:
    closed = await _start(access_on, own_redis.url, key_cache_seconds=30.0)
    fail_open = await _start(access_on, own_redis.url, fail_open=True)
    record, secret = await closed.store.create("k", max_concurrent_streams=1)
    _, never_seen = await closed.store.create("other")
    await closed.authenticate(secret)
    await fail_open.authenticate(secret)
    assert await closed.ready()

    own_redis.stop()
    assert not await closed.ready()
    principal = await closed.authenticate(secret)  # validated < 30 s ago: from the cache
    assert principal.key_id == record.id
    denied = await _eventually_denied(closed.authenticate(never_seen))
    assert (denied.close_code, denied.code) == (4503, "store_unavailable")
    denied = await _eventually_denied(closed.admit(principal, MODEL))
    assert (denied.close_code, denied.code) == (4503, "store_unavailable")

    admitted = await fail_open.admit(await fail_open.authenticate(secret), MODEL)
    await admitted.record_usage(2.0, MODEL)  # kept for later
    # Fail-open still counts this process's own streams.
    assert (await _eventually_denied(fail_open.admit(principal, MODEL))).close_code == 4429

    start_again(own_redis)
    await _eventually(lambda: fail_open.ready())

    async def written() -> bool:
        usage = await closed.store.usage(record.id)
        return bool(usage["total"]["audio_seconds"] == 2.0)
    await _eventually(written)
    # The fail-open lease was re-created by the heartbeat, so the limit holds globally again.
    assert (await _eventually_denied(closed.admit(principal, MODEL))).close_code == 4429
    await admitted.release()
    await (await closed.admit(principal, MODEL)).release()


async def _eventually_denied(awaitable: object) -> AccessDenied:
    with pytest.raises(AccessDenied) as info:
        await awaitable  # type: ignore[misc]
    return info.value


async def test_cache_lasts_only_its_window(own_redis: RedisServer,
                                           access_on: list[GatewayAccessControl]) -> None:
    access = await _start(access_on, own_redis.url, key_cache_seconds=0.2)
    _, secret = await access.store.create("k")
    await access.authenticate(secret)
    own_redis.stop()
    await access.authenticate(secret)
    await asyncio.sleep(0.3)  # let the cache window pass
    assert (await _eventually_denied(access.authenticate(secret))).close_code == 4503
    start_again(own_redis)
    await _eventually(lambda: access.ready())
    await access.authenticate(secret)


async def test_restart_during_a_session_loses_no_usage(
        own_redis: RedisServer, access_on: list[GatewayAccessControl]) -> None:
    access = await _start(access_on, own_redis.url, lease_ttl=1.5)
    record, secret = await access.store.create("k", audio_seconds_per_day=100)
    admission = await access.admit(await access.authenticate(secret), MODEL)
    await admission.record_usage(3.0, MODEL)

    own_redis.stop()
    for _ in range(4):
        await admission.record_usage(1.0, MODEL)  # the session goes on
    assert not admission.exhausted and admission.day_used == pytest.approx(7.0)
    start_again(own_redis)
    await admission.record_usage(0.5, MODEL)
    assert admission.day_used == pytest.approx(7.5)
    await admission.release()
    usage = await access.store.usage(record.id)
    assert usage["total"] == {"audio_seconds": 7.5, "sessions": 1}


async def test_lease_is_recreated_after_redis_lost_it(
        own_redis: RedisServer, access_on: list[GatewayAccessControl]) -> None:
    access = await _start(access_on, own_redis.url, lease_ttl=0.9)
    record, secret = await access.store.create("k", max_concurrent_streams=1)
    admission = await access.admit(await access.authenticate(secret), MODEL)
    with redis_sync.Redis(port=own_redis.port, decode_responses=True) as client:
        client.delete(keys.key_leases(record.id))  # as if Redis had lost its data

        async def recreated() -> bool:
            return client.zscore(keys.key_leases(record.id), admission.lease_id) is not None
        await _eventually(recreated, within=3.0)
    await admission.release()
