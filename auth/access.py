"""`GatewayAccessControl`: authentication, admission, leases and metering for every session.

One instance per gateway process. A background heartbeat renews this process's concurrency
leases (so a crashed process's slots expire after one lease TTL) and writes usage that could
not be written while the store was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from fnmatch import fnmatchcase

from auth import credentials
from auth.admission import GatewayAdmission
from auth.backend import AdmitResult, Backend, Period, Quotas, StoreUnavailable
from auth.base import AccessControl, AccessDenied, KeyLimits, KeyRecord, Principal
from auth.store import KeyStore

logger = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = 30.0
KEY_CACHE_SECONDS = 30.0
KEY_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    validated_at: float
    token_expires_at: float | None


def resolve_quotas(limits: KeyLimits, defaults: Quotas) -> Quotas:
    """Per-key limits over the server defaults (None = default, 0 = unlimited)."""
    def pick(value: float | None, default: float) -> float:
        return default if value is None else value
    return Quotas(
        int(pick(limits.max_concurrent_streams, defaults.max_concurrent_streams)),
        int(pick(limits.sessions_per_minute, defaults.sessions_per_minute)),
        float(pick(limits.audio_seconds_per_day, defaults.audio_seconds_per_day)),
        float(pick(limits.audio_seconds_per_month, defaults.audio_seconds_per_month)),
    )


def check_model_allowed(record: KeyRecord, model_id: str) -> None:
    """Raise `AccessDenied` (4403 naming the model) unless the key may use `model_id`."""
    if record.allowed_models and not any(fnmatchcase(model_id, pattern)
                                         for pattern in record.allowed_models):
        raise AccessDenied(4403, f"key not allowed to use model {model_id}"[:123],
                           code="model_not_allowed")


def _normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def check_origin(record: KeyRecord, origin: str | None) -> None:
    """Raise 4403 when a browser `origin` is not one of the key's `allowed_origins`
    (requests without an Origin header, and keys without the list, pass)."""
    if origin and record.allowed_origins:
        wanted = _normalize_origin(origin)
        if not any(fnmatchcase(wanted, _normalize_origin(pattern))
                   for pattern in record.allowed_origins):
            raise AccessDenied(4403, "key not allowed from this Origin",
                               code="origin_not_allowed")


class GatewayAccessControl(AccessControl):
    def __init__(self, backend: Backend, *, defaults: Quotas | None = None,
                 fail_open: bool = False, failed_auth_per_minute: int = 20,
                 lease_ttl: float = DEFAULT_LEASE_TTL, anonymous_key_id: str | None = None,
                 key_cache_seconds: float = KEY_CACHE_SECONDS) -> None:
        if not 0 < lease_ttl <= 60:
            raise ValueError("lease_ttl must be in (0, 60] seconds")
        self.backend = backend
        self.store = KeyStore(backend)
        self.defaults = defaults or Quotas()
        self.fail_open = fail_open
        self.failed_auth_per_minute = failed_auth_per_minute
        self.lease_ttl = lease_ttl
        self.anonymous_key_id = anonymous_key_id
        self.key_cache_seconds = key_cache_seconds
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._active: dict[str, dict[str, GatewayAdmission]] = defaultdict(dict)
        self._lease_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._pending: dict[tuple[str, Period, str], float] = defaultdict(float)
        self._heartbeat: asyncio.Task[None] | None = None
        self._store_down_logged = False

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.backend.start()
        self._heartbeat = asyncio.create_task(self._run_heartbeat(), name="auth-heartbeat")

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        for admissions in list(self._active.values()):
            for admission in list(admissions.values()):
                await admission.release()
        await self.flush_usage()
        if self._pending:
            logger.warning("%d usage entries could not be written before shutdown",
                           len(self._pending))
        await self.backend.aclose()

    async def ready(self) -> bool:
        return await self.backend.ping()

    async def ensure_key(self, secret: str, name: str) -> KeyRecord:
        return await self.store.ensure(secret, name)

    # --- authentication ----------------------------------------------------------------
    async def authenticate(self, secret: str | None, *, client: str | None = None) -> Principal:
        if not secret:
            raise AccessDenied(4401, "missing API key", code="missing_key")
        key_hash = credentials.hash_secret(secret)
        watch = client if self.failed_auth_per_minute > 0 else None
        try:
            found = await self.store.lookup(secret, client=watch)
        except StoreUnavailable:
            cached = self._cached(key_hash)
            if cached is not None:
                return cached
            raise AccessDenied(4503, "key store unavailable, try again shortly",
                               code="store_unavailable", retry_after=1.0) from None
        if watch and found.failures >= self.failed_auth_per_minute:
            # Blocked for the rest of the window, even with a right key.
            raise self._too_many_failures(found.failures_reset_in)
        record, token_expires_at = found.record, found.token_expires_at
        if record is None:
            self._cache.pop(key_hash, None)
            await self._note_failure(client)
            raise AccessDenied(4401, "invalid API key", code="invalid_key")
        self._check_key(record, key_hash)
        principal = Principal(record, via_token=token_expires_at is not None)
        self._cache[key_hash] = _Cached(principal, time.monotonic(), token_expires_at)
        self._cache.move_to_end(key_hash)
        while len(self._cache) > KEY_CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    def _check_key(self, record: KeyRecord, key_hash: str) -> None:
        if record.revoked:
            self._cache.pop(key_hash, None)
            raise AccessDenied(4401, "API key revoked", code="key_revoked")
        if record.expires_at is not None and record.expires_at <= time.time():
            self._cache.pop(key_hash, None)
            raise AccessDenied(4401, "API key expired", code="key_expired")

    def _cached(self, key_hash: str) -> Principal | None:
        """A key validated in the last `key_cache_seconds` stays valid while the store is down."""
        entry = self._cache.get(key_hash)
        if entry is None or time.monotonic() - entry.validated_at > self.key_cache_seconds:
            return None
        if entry.token_expires_at is not None and entry.token_expires_at <= time.time():
            return None
        self._check_key(entry.principal.key, key_hash)
        logger.warning("key store unavailable: key %s accepted from the local cache",
                       entry.principal.key_id)
        return entry.principal

    def _too_many_failures(self, remaining: float) -> AccessDenied:
        return AccessDenied(4429, "too many failed key attempts from this address",
                            code="too_many_failed_attempts", retry_after=max(1.0, remaining))

    async def _note_failure(self, client: str | None) -> None:
        if not client or self.failed_auth_per_minute <= 0:
            return
        with contextlib.suppress(StoreUnavailable):
            failures, remaining = await self.backend.note_auth_failure(client)
            if failures > self.failed_auth_per_minute:
                raise self._too_many_failures(remaining)

    async def anonymous(self) -> Principal:
        """The principal for keyless connections (xrx front-end), when the operator set
        `anonymous_key_id`; the key is created (with an unknowable secret) on first use so
        its limits can be managed like any other key's."""
        if not self.anonymous_key_id:
            raise AccessDenied(4401, "missing API key", code="missing_key")
        try:
            record = await self.store.get(self.anonymous_key_id)
            if record is None:
                secret = credentials.new_secret()
                record = KeyRecord(id=self.anonymous_key_id, name="anonymous",
                                   key_hash=credentials.hash_secret(secret),
                                   created_at=time.time())
                await self.backend.put_key(record)
        except StoreUnavailable:
            raise AccessDenied(4503, "key store unavailable, try again shortly",
                               code="store_unavailable", retry_after=1.0) from None
        self._check_key(record, record.key_hash)
        return Principal(record)

    # --- admission ---------------------------------------------------------------------
    async def admit(self, principal: Principal, model_id: str, *,
                    origin: str | None = None) -> GatewayAdmission:
        record = principal.key
        check_model_allowed(record, model_id)
        check_origin(record, origin)
        quotas = resolve_quotas(record.limits, self.defaults)
        lease_id = uuid.uuid4().hex
        try:
            result = await self.backend.admit(record.id, lease_id, model_id, quotas,
                                              self.lease_ttl, Period.at())
        except StoreUnavailable:
            if not self.fail_open:
                raise AccessDenied(4503, "limits store unavailable, try again shortly",
                                   code="store_unavailable", retry_after=1.0) from None
            result = self._admit_locally(record.id, quotas)
            logger.warning("limits store unavailable: key %s admitted (fail-open)", record.id)
        self._refuse_unless_ok(result, quotas)
        admission = GatewayAdmission(self, record.id, lease_id, model_id, quotas,
                                     result.day_used, result.month_used)
        self._active[record.id][lease_id] = admission
        return admission

    def _admit_locally(self, key_id: str, quotas: Quotas) -> AdmitResult:
        """Fail-open admission: only this process's own streams can be counted."""
        if quotas.max_concurrent_streams and \
                len(self._active.get(key_id, {})) >= quotas.max_concurrent_streams:
            return AdmitResult("concurrency", 5.0)
        return AdmitResult("ok")

    @staticmethod
    def _refuse_unless_ok(result: AdmitResult, quotas: Quotas) -> None:
        if result.status == "ok":
            return
        if result.status == "concurrency":
            raise AccessDenied(
                4429, f"too many concurrent streams for this key "
                      f"(limit {quotas.max_concurrent_streams})",
                code="too_many_streams", retry_after=round(result.retry_after, 3))
        if result.status == "rate":
            raise AccessDenied(
                4429, f"too many new sessions for this key "
                      f"(limit {quotas.sessions_per_minute} per minute)",
                code="rate_limited", retry_after=round(max(result.retry_after, 0.001), 3))
        if result.status == "quota":
            label = "monthly" if result.detail == "month" else "daily"
            limit = (quotas.audio_seconds_per_month if result.detail == "month"
                     else quotas.audio_seconds_per_day)
            raise AccessDenied(4402, f"{label} audio quota exhausted ({limit:g} s)",
                               code="quota_exceeded")
        raise AccessDenied(4503, "unexpected answer from the limits store",
                           code="store_unavailable")

    async def mint_token(self, principal: Principal, ttl_seconds: float) -> tuple[str, float]:
        """A short-lived token with the principal's key's rights (keys only, not tokens)."""
        if principal.via_token:
            raise AccessDenied(4403, "a token cannot mint tokens; use the API key",
                               code="forbidden")
        return await self.store.mint_token(principal.key_id, ttl_seconds)

    # --- leases and usage (used by GatewayAdmission and the heartbeat) -----------------
    def buffer_usage(self, key_id: str, period: Period, model_id: str, seconds: float) -> None:
        self._pending[(key_id, period, model_id)] += seconds

    async def flush_usage(self, key_id: str | None = None,
                          period: Period | None = None) -> tuple[float, float] | None:
        """Write buffered usage (of one key, or all). Returns the key's (day, month) totals
        for ``period`` if they were written, None if the store was unavailable."""
        totals: tuple[float, float] | None = None
        entries = [entry for entry in self._pending if key_id is None or entry[0] == key_id]
        taken = {entry: self._pending.pop(entry) for entry in entries}
        failed = False
        for (kid, when, model), seconds in taken.items():
            if failed:
                self._pending[(kid, when, model)] += seconds
                continue
            try:
                written = await self.backend.add_usage(kid, when, model, seconds)
            except StoreUnavailable:
                failed = True
                self._pending[(kid, when, model)] += seconds
                continue
            if when == period:
                totals = written
        if failed:
            return None
        return totals

    async def release_admission(self, admission: GatewayAdmission) -> None:
        self._active[admission.key_id].pop(admission.lease_id, None)
        if not self._active[admission.key_id]:
            del self._active[admission.key_id]
        await self.flush_usage(admission.key_id)
        async with self._lease_locks[admission.key_id]:
            try:
                await self.backend.release_lease(admission.key_id, admission.lease_id)
            except StoreUnavailable:
                logger.warning("could not free lease of key %s now; it expires within %g s",
                               admission.key_id, self.lease_ttl)

    async def renew_leases(self) -> None:
        """Renew every lease this process holds; re-creates them if Redis lost them."""
        for key_id in list(self._active):
            async with self._lease_locks[key_id]:
                lease_ids = list(self._active.get(key_id, {}))
                await self.backend.renew_leases(key_id, lease_ids, self.lease_ttl)

    async def _run_heartbeat(self) -> None:
        interval = min(self.lease_ttl / 3, 5.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew_leases()
                await self.flush_usage()
                if self._pending:
                    raise StoreUnavailable("usage not written yet")
            except StoreUnavailable as exc:
                if not self._store_down_logged:
                    logger.warning("key store unavailable (%s); retrying every %.1f s",
                                   exc, interval)
                    self._store_down_logged = True
                continue
            except Exception:
                logger.exception("auth heartbeat failed; retrying")
                continue
            if self._store_down_logged:
                logger.info("key store reachable again; leases renewed and usage written")
                self._store_down_logged = False
