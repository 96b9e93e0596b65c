"""Redis backend (redis-py asyncio): one Lua script per atomic step, all of one API key's data
under its hash tag (see `auth.keys`), so it runs unchanged on a single node or on Redis Cluster.

Time for leases and windows comes from the Redis server (``TIME``), so gateway processes with
skewed clocks still agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.exceptions import ClusterError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from auth import keys
from auth.backend import (
    USAGE_TTL_SECONDS,
    AdmitResult,
    Backend,
    Lookup,
    Period,
    Quotas,
    StoreUnavailable,
    record_from_fields,
    record_to_fields,
)
from auth.base import KeyRecord

logger = logging.getLogger(__name__)

# Failures that mean "the store is not there right now" (as opposed to a bug in a command).
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, ClusterError, OSError)

ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local max_conc = tonumber(ARGV[3])
if max_conc > 0 and redis.call('ZCARD', KEYS[1]) >= max_conc then
  return {'concurrency', '5000', '0', '0'}
end
local spm = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
if spm > 0 and redis.call('ZCARD', KEYS[2]) >= spm then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {'rate', tostring(tonumber(oldest[2]) + 60000 - now), '0', '0'}
end
local day_used = redis.call('HGET', KEYS[3], 'seconds') or '0'
local month_used = redis.call('HGET', KEYS[4], 'seconds') or '0'
local day_limit = tonumber(ARGV[5])
local month_limit = tonumber(ARGV[6])
if day_limit > 0 and tonumber(day_used) >= day_limit then
  return {'quota:day', '0', day_used, month_used}
end
if month_limit > 0 and tonumber(month_used) >= month_limit then
  return {'quota:month', '0', day_used, month_used}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl + 60000)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], 61000)
redis.call('HINCRBY', KEYS[3], 'sessions', 1)
redis.call('HINCRBY', KEYS[3], 'sessions:' .. ARGV[7], 1)
redis.call('EXPIRE', KEYS[3], ARGV[8])
return {'ok', '0', day_used, month_used}
"""

RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl + 60000)
return #ARGV - 1
"""

USAGE_LUA = """
local d = redis.call('HINCRBYFLOAT', KEYS[1], 'seconds', ARGV[2])
redis.call('HINCRBYFLOAT', KEYS[1], 'seconds:' .. ARGV[1], ARGV[2])
local m = redis.call('HINCRBYFLOAT', KEYS[2], 'seconds', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {d, m}
"""

AUTH_FAIL_LUA = """
local n = 0
if ARGV[1] == '1' then
  n = redis.call('INCR', KEYS[1])
  if n == 1 then redis.call('PEXPIRE', KEYS[1], 60000) end
else
  n = tonumber(redis.call('GET', KEYS[1]) or '0')
end
return {n, redis.call('PTTL', KEYS[1])}
"""


@contextlib.contextmanager
def _outage_as_unavailable() -> Iterator[None]:
    try:
        yield
    except OUTAGE_ERRORS as exc:
        raise StoreUnavailable(f"key store unreachable: {type(exc).__name__}") from exc


class RedisBackend(Backend):
    """Connects lazily in `start()`; detects Redis Cluster (``cluster_enabled:1``) by itself."""

    def __init__(self, url: str, *, socket_timeout: float = 1.0,
                 connect_attempts: int = 10) -> None:
        self._url = url
        self._socket_timeout = socket_timeout
        self._connect_attempts = connect_attempts
        self._client: Any = None
        self.cluster = False

    def _options(self) -> dict[str, Any]:
        return {
            "decode_responses": True,
            "socket_timeout": self._socket_timeout,
            "socket_connect_timeout": self._socket_timeout,
            # One immediate retry re-opens a connection a restarted Redis dropped; longer
            # outages surface at once as StoreUnavailable instead of stalling sessions.
            "retry": Retry(NoBackoff(), 1),
        }

    async def start(self) -> None:
        """Ping with retries (like arq), then switch to the cluster client if needed."""
        delay = 0.1
        client: Any = None
        for attempt in range(1, self._connect_attempts + 1):
            client = aioredis.Redis.from_url(self._url, **self._options())
            try:
                await client.ping()
                info = await client.info("cluster")
                break
            except OUTAGE_ERRORS as exc:
                await client.aclose()
                if attempt == self._connect_attempts:
                    raise StoreUnavailable(f"cannot reach Redis: {type(exc).__name__}") from exc
                logger.warning("Redis not reachable (attempt %d/%d), retrying in %.1f s",
                               attempt, self._connect_attempts, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if info.get("cluster_enabled") in (1, "1"):
            await client.aclose()
            self.cluster = True
            options = self._options()
            options.pop("retry")
            client = RedisCluster.from_url(self._url, **options)
            await client.initialize()
        self._client = client
        self._admit = client.register_script(ADMIT_LUA)
        self._renew = client.register_script(RENEW_LUA)
        self._add_usage = client.register_script(USAGE_LUA)
        self._auth_fail = client.register_script(AUTH_FAIL_LUA)

    async def ping(self) -> bool:
        if self._client is None:
            return False
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- keys --------------------------------------------------------------------------
    async def put_key(self, record: KeyRecord) -> None:
        with _outage_as_unavailable():
            await self._client.hset(keys.key_record(record.id), mapping=record_to_fields(record))
            await self._client.sadd(keys.all_keys(), record.id)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        with _outage_as_unavailable():
            fields = await self._client.hgetall(keys.key_record(key_id))
        return record_from_fields(fields) if fields else None

    async def list_key_ids(self) -> list[str]:
        with _outage_as_unavailable():
            return sorted(await self._client.smembers(keys.all_keys()))

    async def claim_hash(self, key_hash: str, key_id: str) -> str:
        with _outage_as_unavailable():
            name = keys.hash_index(key_hash)
            if await self._client.set(name, key_id, nx=True):
                return key_id
            current = await self._client.get(name)
        return str(current) if current else key_id

    async def find_key_id(self, key_hash: str) -> str | None:
        with _outage_as_unavailable():
            value = await self._client.get(keys.hash_index(key_hash))
        return str(value) if value else None

    async def lookup(self, key_id: str, *, token_hash: str | None = None,
                     client: str | None = None) -> Lookup:
        # One round trip (a pipeline; on a cluster, one per node involved).
        with _outage_as_unavailable():
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(keys.key_record(key_id))
            if token_hash:
                pipe.hget(keys.key_tokens(key_id), token_hash)
            if client:
                pipe.get(keys.auth_failures(client))
                pipe.pttl(keys.auth_failures(client))
            replies = list(await pipe.execute())
        fields = replies.pop(0)
        expiry = replies.pop(0) if token_hash else None
        failures, pttl = (replies[0], replies[1]) if client else (None, 0)
        return Lookup(record_from_fields(fields) if fields else None,
                      float(expiry) if expiry else None,
                      int(failures or 0), max(0.0, int(pttl) / 1000))

    async def drop_hash(self, key_hash: str) -> None:
        with _outage_as_unavailable():
            await self._client.delete(keys.hash_index(key_hash))

    # --- tokens ------------------------------------------------------------------------
    async def put_token(self, key_id: str, token_hash: str, expires_at: float) -> None:
        name = keys.key_tokens(key_id)
        with _outage_as_unavailable():
            await self._client.hset(name, token_hash, repr(expires_at))
            # The hash lives as long as its longest token; expired fields are harmless.
            await self._client.expireat(name, int(expires_at) + 1, gt=True)
            await self._client.expireat(name, int(expires_at) + 1, nx=True)

    async def token_expiry(self, key_id: str, token_hash: str) -> float | None:
        with _outage_as_unavailable():
            value = await self._client.hget(keys.key_tokens(key_id), token_hash)
        return float(value) if value else None

    async def drop_tokens(self, key_id: str) -> None:
        with _outage_as_unavailable():
            await self._client.delete(keys.key_tokens(key_id))

    # --- limits ------------------------------------------------------------------------
    async def admit(self, key_id: str, lease_id: str, model_id: str, quotas: Quotas,
                    lease_ttl: float, period: Period) -> AdmitResult:
        with _outage_as_unavailable():
            status, retry_ms, day_used, month_used = await self._admit(
                keys=[keys.key_leases(key_id), keys.key_starts(key_id),
                      keys.usage_day(key_id, period.day), keys.usage_month(key_id, period.month)],
                args=[lease_id, int(lease_ttl * 1000), quotas.max_concurrent_streams,
                      quotas.sessions_per_minute, quotas.audio_seconds_per_day,
                      quotas.audio_seconds_per_month, model_id, USAGE_TTL_SECONDS])
        kind, _, detail = str(status).partition(":")
        return AdmitResult(kind, max(0.0, float(retry_ms) / 1000), float(day_used),
                           float(month_used), detail)

    async def renew_leases(self, key_id: str, lease_ids: list[str], lease_ttl: float) -> None:
        if not lease_ids:
            return
        with _outage_as_unavailable():
            await self._renew(keys=[keys.key_leases(key_id)],
                              args=[int(lease_ttl * 1000), *lease_ids])

    async def release_lease(self, key_id: str, lease_id: str) -> None:
        with _outage_as_unavailable():
            await self._client.zrem(keys.key_leases(key_id), lease_id)

    async def add_usage(self, key_id: str, period: Period, model_id: str,
                        seconds: float) -> tuple[float, float]:
        with _outage_as_unavailable():
            day, month = await self._add_usage(
                keys=[keys.usage_day(key_id, period.day), keys.usage_month(key_id, period.month)],
                args=[model_id, repr(float(seconds)), USAGE_TTL_SECONDS])
        return float(day), float(month)

    async def usage(self, key_id: str, days: list[str]) -> dict[str, dict[str, float]]:
        # One round trip: every day hash of a key lives in the key's slot.
        with _outage_as_unavailable():
            pipe = self._client.pipeline(transaction=False)
            for day in days:
                pipe.hgetall(keys.usage_day(key_id, day))
            replies = await pipe.execute()
        return {day: {name: float(value) for name, value in fields.items()}
                for day, fields in zip(days, replies, strict=True) if fields}

    # --- brute-force protection --------------------------------------------------------
    async def _failures(self, client: str, count: bool) -> tuple[int, float]:
        with _outage_as_unavailable():
            n, pttl = await self._auth_fail(keys=[keys.auth_failures(client)],
                                            args=["1" if count else "0"])
        return int(n), max(0.0, int(pttl) / 1000)

    async def auth_failures(self, client: str) -> tuple[int, float]:
        return await self._failures(client, False)

    async def note_auth_failure(self, client: str) -> tuple[int, float]:
        return await self._failures(client, True)
