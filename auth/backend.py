"""The storage interface behind keys, tokens, limits and metering, with two backends:
`auth.memory.MemoryBackend` (one process) and `auth.redis_store.RedisBackend` (many processes).

Backends raise `StoreUnavailable` when the store cannot be reached; everything above decides
what that means (4503, a cached key, fail-open limits, usage kept for later).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auth.base import KeyLimits, KeyRecord


class StoreUnavailable(Exception):
    """The backing store (Redis) cannot be reached or did not answer in time."""


@dataclass(frozen=True, slots=True)
class Quotas:
    """Limits resolved against the server defaults; 0 = unlimited."""

    max_concurrent_streams: int = 0
    sessions_per_minute: int = 0
    audio_seconds_per_day: float = 0.0
    audio_seconds_per_month: float = 0.0


@dataclass(frozen=True, slots=True)
class AdmitResult:
    """Outcome of the atomic admission step. ``status`` is ok | concurrency | rate | quota."""

    status: str
    retry_after: float = 0.0
    day_used: float = 0.0
    month_used: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Period:
    """The UTC day and month a moment of usage belongs to."""

    day: str
    month: str

    @classmethod
    def at(cls, timestamp: float | None = None) -> Period:
        moment = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC)
        return cls(moment.strftime("%Y-%m-%d"), moment.strftime("%Y-%m"))


@dataclass(frozen=True, slots=True)
class Lookup:
    """What authentication needs, fetched together: the key record, the token's expiry (when
    a token hash was asked for) and the client's failed attempts in the current window."""

    record: KeyRecord | None
    token_expires_at: float | None = None
    failures: int = 0
    failures_reset_in: float = 0.0


# Usage hashes keep about 13 months so the monthly quota and /v1/usage have their data.
USAGE_TTL_SECONDS = 400 * 86400


class Backend(ABC):
    """Storage operations. Every multi-step update is atomic within one backend call."""

    # --- keys --------------------------------------------------------------------------
    @abstractmethod
    async def put_key(self, record: KeyRecord) -> None: ...

    @abstractmethod
    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    @abstractmethod
    async def list_key_ids(self) -> list[str]: ...

    @abstractmethod
    async def claim_hash(self, key_hash: str, key_id: str) -> str:
        """Point ``key_hash`` at ``key_id`` unless it already points somewhere; return the
        key id it points at afterwards."""

    @abstractmethod
    async def find_key_id(self, key_hash: str) -> str | None: ...

    async def lookup(self, key_id: str, *, token_hash: str | None = None,
                     client: str | None = None) -> Lookup:
        """Key record (+ token expiry, + client's failed attempts). Backends with round trips
        override this to fetch it all in one."""
        record = await self.get_key(key_id)
        expiry = await self.token_expiry(key_id, token_hash) if token_hash else None
        failures, reset_in = await self.auth_failures(client) if client else (0, 0.0)
        return Lookup(record, expiry, failures, reset_in)

    @abstractmethod
    async def drop_hash(self, key_hash: str) -> None: ...

    # --- tokens ------------------------------------------------------------------------
    @abstractmethod
    async def put_token(self, key_id: str, token_hash: str, expires_at: float) -> None: ...

    @abstractmethod
    async def token_expiry(self, key_id: str, token_hash: str) -> float | None: ...

    @abstractmethod
    async def drop_tokens(self, key_id: str) -> None: ...

    # --- limits ------------------------------------------------------------------------
    @abstractmethod
    async def admit(self, key_id: str, lease_id: str, model_id: str, quotas: Quotas,
                    lease_ttl: float, period: Period) -> AdmitResult:
        """Atomically: drop expired leases, check concurrency, the per-minute window and the
        quotas, then take the lease, note the session start and count the session."""

    @abstractmethod
    async def renew_leases(self, key_id: str, lease_ids: list[str], lease_ttl: float) -> None:
        """Extend (or re-create, e.g. after a Redis restart) these leases."""

    @abstractmethod
    async def release_lease(self, key_id: str, lease_id: str) -> None: ...

    @abstractmethod
    async def add_usage(self, key_id: str, period: Period, model_id: str,
                        seconds: float) -> tuple[float, float]:
        """Add audio seconds; return the key's (day, month) totals afterwards."""

    @abstractmethod
    async def usage(self, key_id: str, days: list[str]) -> dict[str, dict[str, float]]:
        """Raw usage hashes by day (only days with data)."""

    # --- brute-force protection --------------------------------------------------------
    @abstractmethod
    async def auth_failures(self, client: str) -> tuple[int, float]:
        """(failed attempts in the current window, seconds until the window ends)."""

    @abstractmethod
    async def note_auth_failure(self, client: str) -> tuple[int, float]:
        """Count one failed attempt; return the same as `auth_failures`."""

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (with retries)."""
        return None

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        """Release connections."""
        return None


# --- record codec (shared by both backends and the CLI's JSON output) -------------------

def record_to_fields(record: KeyRecord) -> dict[str, str]:
    limits = record.limits
    return {
        "id": record.id,
        "name": record.name,
        "key_hash": record.key_hash,
        "created_at": repr(record.created_at),
        "revoked": "1" if record.revoked else "0",
        "allowed_models": json.dumps(list(record.allowed_models)),
        "allowed_origins": json.dumps(list(record.allowed_origins)),
        "expires_at": "" if record.expires_at is None else repr(record.expires_at),
        "limits": json.dumps({
            "max_concurrent_streams": limits.max_concurrent_streams,
            "sessions_per_minute": limits.sessions_per_minute,
            "audio_seconds_per_day": limits.audio_seconds_per_day,
            "audio_seconds_per_month": limits.audio_seconds_per_month,
        }),
    }


def record_from_fields(fields: dict[str, str]) -> KeyRecord:
    limits: dict[str, Any] = json.loads(fields.get("limits") or "{}")
    return KeyRecord(
        id=fields["id"],
        name=fields.get("name", ""),
        key_hash=fields["key_hash"],
        created_at=float(fields.get("created_at") or 0.0),
        revoked=fields.get("revoked") == "1",
        allowed_models=tuple(json.loads(fields.get("allowed_models") or "[]")),
        allowed_origins=tuple(json.loads(fields.get("allowed_origins") or "[]")),
        expires_at=float(fields["expires_at"]) if fields.get("expires_at") else None,
        limits=KeyLimits(
            max_concurrent_streams=limits.get("max_concurrent_streams"),
            sessions_per_minute=limits.get("sessions_per_minute"),
            audio_seconds_per_day=limits.get("audio_seconds_per_day"),
            audio_seconds_per_month=limits.get("audio_seconds_per_month"),
        ),
    )
