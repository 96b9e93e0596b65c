"""In-process backend: the default when no Redis is configured. Same semantics as Redis,
within one process (the event loop makes each call atomic)."""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict

from auth.backend import AdmitResult, Backend, Period, Quotas
from auth.base import KeyRecord

RATE_WINDOW = 60.0
# Retry hint when every concurrency slot is taken: slots free when sessions end, not on a clock.
CONCURRENCY_RETRY_AFTER = 5.0
# Client addresses with a live failed-attempt window; past this many the oldest window (the
# one closest to its end) is forgotten, so the table stays bounded (~200 B per address).
MAX_TRACKED_CLIENTS = 50_000


class MemoryBackend(Backend):
    def __init__(self, *, max_tracked_clients: int = MAX_TRACKED_CLIENTS) -> None:
        self._keys: dict[str, KeyRecord] = {}
        self._hashes: dict[str, str] = {}
        self._tokens: dict[str, dict[str, float]] = defaultdict(dict)
        self._leases: dict[str, dict[str, float]] = defaultdict(dict)
        self._starts: dict[str, list[float]] = defaultdict(list)
        self._usage: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        # client -> (failures, window end), in order of window end: every window lasts
        # RATE_WINDOW from its first failure and new windows go to the end, so expired ones
        # are always at the front and each attempt costs O(1) (amortized).
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._max_tracked_clients = max_tracked_clients

    async def put_key(self, record: KeyRecord) -> None:
        self._keys[record.id] = record

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    async def list_key_ids(self) -> list[str]:
        return sorted(self._keys)

    async def claim_hash(self, key_hash: str, key_id: str) -> str:
        return self._hashes.setdefault(key_hash, key_id)

    async def find_key_id(self, key_hash: str) -> str | None:
        return self._hashes.get(key_hash)

    async def drop_hash(self, key_hash: str) -> None:
        self._hashes.pop(key_hash, None)

    async def put_token(self, key_id: str, token_hash: str, expires_at: float) -> None:
        tokens = self._tokens[key_id]
        now = time.time()
        for stale in [h for h, exp in tokens.items() if exp <= now]:
            del tokens[stale]
        tokens[token_hash] = expires_at

    async def token_expiry(self, key_id: str, token_hash: str) -> float | None:
        return self._tokens.get(key_id, {}).get(token_hash)

    async def drop_tokens(self, key_id: str) -> None:
        self._tokens.pop(key_id, None)

    def _live_leases(self, key_id: str, now: float) -> dict[str, float]:
        leases = self._leases[key_id]
        for stale in [lease for lease, exp in leases.items() if exp <= now]:
            del leases[stale]
        return leases

    async def admit(self, key_id: str, lease_id: str, model_id: str, quotas: Quotas,
                    lease_ttl: float, period: Period) -> AdmitResult:
        now = time.time()
        leases = self._live_leases(key_id, now)
        if quotas.max_concurrent_streams and len(leases) >= quotas.max_concurrent_streams:
            return AdmitResult("concurrency", CONCURRENCY_RETRY_AFTER)
        starts = self._starts[key_id]
        starts[:] = [t for t in starts if t > now - RATE_WINDOW]
        if quotas.sessions_per_minute and len(starts) >= quotas.sessions_per_minute:
            return AdmitResult("rate", max(0.001, starts[0] + RATE_WINDOW - now))
        day = self._usage[(key_id, period.day)]
        month = self._usage[(key_id, period.month)]
        day_used, month_used = day.get("seconds", 0.0), month.get("seconds", 0.0)
        if quotas.audio_seconds_per_day and day_used >= quotas.audio_seconds_per_day:
            return AdmitResult("quota", 0.0, day_used, month_used, "day")
        if quotas.audio_seconds_per_month and month_used >= quotas.audio_seconds_per_month:
            return AdmitResult("quota", 0.0, day_used, month_used, "month")
        leases[lease_id] = now + lease_ttl
        starts.append(now)
        day["sessions"] = day.get("sessions", 0.0) + 1
        day[f"sessions:{model_id}"] = day.get(f"sessions:{model_id}", 0.0) + 1
        return AdmitResult("ok", 0.0, day_used, month_used)

    async def renew_leases(self, key_id: str, lease_ids: list[str], lease_ttl: float) -> None:
        expiry = time.time() + lease_ttl
        for lease_id in lease_ids:
            self._leases[key_id][lease_id] = expiry

    async def release_lease(self, key_id: str, lease_id: str) -> None:
        self._leases[key_id].pop(lease_id, None)

    async def add_usage(self, key_id: str, period: Period, model_id: str,
                        seconds: float) -> tuple[float, float]:
        day = self._usage[(key_id, period.day)]
        month = self._usage[(key_id, period.month)]
        for bucket in (day, month):
            bucket["seconds"] = bucket.get("seconds", 0.0) + seconds
        day[f"seconds:{model_id}"] = day.get(f"seconds:{model_id}", 0.0) + seconds
        return day["seconds"], month["seconds"]

    async def usage(self, key_id: str, days: list[str]) -> dict[str, dict[str, float]]:
        return {d: dict(self._usage[(key_id, d)]) for d in days
                if self._usage.get((key_id, d))}

    async def auth_failures(self, client: str) -> tuple[int, float]:
        count, window_end = self._failures.get(client, (0, 0.0))
        remaining = window_end - time.monotonic()
        return (count, remaining) if remaining > 0 else (0, 0.0)

    async def note_auth_failure(self, client: str) -> tuple[int, float]:
        now = time.monotonic()
        self._expire_failures(now)
        count, window_end = self._failures.get(client, (0, 0.0))
        if window_end > now:  # same window: the entry keeps its place
            self._failures[client] = (count + 1, window_end)
            return count + 1, window_end - now
        self._failures.pop(client, None)
        self._failures[client] = (1, now + RATE_WINDOW)  # a new window, at the end
        while len(self._failures) > self._max_tracked_clients:
            self._failures.popitem(last=False)
        return 1, RATE_WINDOW

    def _expire_failures(self, now: float) -> None:
        while self._failures:
            _, (_, window_end) = next(iter(self._failures.items()))
            if window_end > now:
                return
            self._failures.popitem(last=False)

    @property
    def tracked_clients(self) -> int:
        """Addresses in the failed-attempt table (for tests and metrics)."""
        return len(self._failures)
