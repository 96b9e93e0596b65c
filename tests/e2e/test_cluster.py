"""Limits across gateway processes: two `python -m app` processes on different ports share one
Redis (a single node, then a three-node Redis Cluster); a kill -9 frees its slots within one
lease; a Redis restart during a session loses neither the session nor its usage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import redis as redis_sync

from tests.auth.e2e_client import ADMIN_TOKEN, create_key, finish, open_stream, refusal
from tests.auth.redis_cluster import redis_cluster
from tests.auth.redis_restart import persistent_redis, start_again
from tests.servers import RedisServer, gateway_process
from tests.speech import pcm

CLUSTER_DB = 7
LEASE_TTL = 3.0
SPEECH = pcm("beckett.wav")


def _env(redis_url: str) -> dict[str, str]:
    return {"SPEECHGATE_REDIS_URL": redis_url, "SPEECHGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "SPEECHGATE_LEASE_TTL_SECONDS": str(LEASE_TTL), "SPEECHGATE_LOG_LEVEL": "warning",
            "SPEECHGATE_DEV_KEY": "sg_dev_cluster_" + os.urandom(8).hex()}


@contextlib.contextmanager
def two_gateways(redis_url: str) -> Iterator[tuple[str, str, object]]:
    """Two gateway processes sharing `redis_url`: yields their base URLs and the first
    process (for kill -9)."""
    with gateway_process(env=_env(redis_url)) as (first, port_a), \
            gateway_process(env=_env(redis_url)) as (_, port_b):
        yield f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}", first


async def _shared_limits_hold(a: str, b: str) -> None:
    """One key's max_concurrent_streams and sessions_per_minute hold across both processes."""
    _, secret = await create_key(f"http://{a}", max_concurrent_streams=1, sessions_per_minute=3)
    held = await open_stream(f"ws://{a}", secret)
    busy = await refusal(f"ws://{b}", secret)
    assert (busy.close_code, busy.error["code"]) == (4429, "too_many_streams")
    await finish(held)
    await finish(await open_stream(f"ws://{b}", secret))  # session 2, on the other process
    await finish(await open_stream(f"ws://{a}", secret))  # session 3
    limited = await refusal(f"ws://{b}", secret)
    assert (limited.close_code, limited.error["code"]) == (4429, "rate_limited")
    assert limited.reason == "too many new sessions for this key (limit 3 per minute)"


@pytest.fixture(scope="module")
def shared_redis_url(redis: RedisServer) -> str:
    url = f"redis://127.0.0.1:{redis.port}/{CLUSTER_DB}"
    with redis_sync.Redis.from_url(url) as client:
        client.flushdb()
    return url


async def test_two_processes_enforce_one_keys_limits(shared_redis_url: str) -> None:
    with two_gateways(shared_redis_url) as (a, b, _):
        await _shared_limits_hold(a, b)


async def test_three_node_redis_cluster_enforces_the_same_limits() -> None:
    with redis_cluster() as cluster, two_gateways(cluster.url) as (a, b, _):
        await _shared_limits_hold(a, b)
        # All Redis keys of one API key (record, leases, window, usage) share one slot.
        slots: dict[str, set[int]] = {}
        kinds: dict[str, set[str]] = {}
        for port in cluster.ports:
            with redis_sync.Redis(port=port, decode_responses=True) as node:
                for name in node.scan_iter("sg:{*"):
                    tag = name[name.index("{") + 1:name.index("}")]
                    slots.setdefault(tag, set()).add(int(node.cluster("keyslot", name)))
                    kinds.setdefault(tag, set()).add(name.split("}:")[1].split(":")[0])
        assert slots and all(len(s) == 1 for s in slots.values())
        assert any({"key", "starts", "usage"} <= k for k in kinds.values())


async def test_kill_9_frees_the_leases_within_one_lease(shared_redis_url: str) -> None:
    with two_gateways(shared_redis_url) as (a, b, first):
        _, secret = await create_key(f"http://{b}", max_concurrent_streams=1)
        held = await open_stream(f"ws://{a}", secret)
        os.kill(first.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        killed_at = time.monotonic()
        assert (await refusal(f"ws://{b}", secret)).close_code == 4429
        while True:
            try:
                ws = await open_stream(f"ws://{b}", secret)
                break
            except Exception:
                assert time.monotonic() - killed_at < 60, "the dead process's lease never expired"
                await asyncio.sleep(0.2)
        freed_after = time.monotonic() - killed_at
        assert freed_after < LEASE_TTL + 2
        await ws.send(SPEECH[:64000])
        assert (await finish(ws))[-1]["type"] == "session.ended"
        with contextlib.suppress(Exception):
            await held.close()


async def test_redis_restart_during_a_session_loses_nothing() -> None:
    with persistent_redis() as own, gateway_process(env=_env(own.url)) as (_, port):
        http_url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
        _, secret = await create_key(http_url, audio_seconds_per_day=3600)
        ws = await open_stream(ws_url, secret)
        second = 32000
        await ws.send(SPEECH[:3 * second])
        own.stop()
        # Keep streaming in real time through the outage, across at least one usage write.
        loop = asyncio.get_running_loop()
        started = loop.time()
        for offset in range(3 * second, 9 * second, 6400):
            await ws.send(SPEECH[offset:offset + 6400])
            await asyncio.sleep(max(0.0, started + (offset - 3 * second) / second - loop.time()))
        start_again(own)
        await ws.send(SPEECH[9 * second:])
        messages = await finish(ws)
        ended = messages[-1]
        assert ended["type"] == "session.ended" and ended["reason"]
        assert ended["usage"]["audio_seconds"] == pytest.approx(len(SPEECH) / second, abs=0.01)
        async with httpx.AsyncClient(base_url=http_url) as http:
            usage = (await http.get("/v1/usage", headers={"X-API-Key": secret})).json()
        assert usage["total"]["audio_seconds"] == pytest.approx(
            ended["usage"]["audio_seconds"], abs=0.01)
        assert json.dumps(usage).count("local.tiny.en") == 1
