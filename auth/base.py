"""The access-control contract the session core relies on.

``auth`` never imports ``app``: it reports refusals as `AccessDenied` carrying the close code
of shared/API.md §1.5 and the app turns that into a WebSocket close or an HTTP status.

Flow for every session (native endpoint and every other front-end alike)::

    principal = await access.authenticate(secret, client=addr)       # 4401 / 4429
    admission = await access.admit(principal, model_id, origin=...)   # 4403 / 4429 / 4402
    try:
        ... await admission.record_usage(seconds, model_id)  # at least every 10 s, and at end
        ... admission.warnings()  -> quota warnings to show the client (90 %)
        ... admission.exhausted   -> True once a quota is used up (session closes 4402)
    finally:
        await admission.release()
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


class AccessDenied(Exception):
    """A refusal with the close code to send (4401, 4402, 4403, 4429, 4503)."""

    def __init__(self, close_code: int, reason: str, *, retry_after: float | None = None,
                 code: str | None = None) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
        self.retry_after = retry_after
        # Machine-readable error code for error events ("invalid_key", "quota_exceeded", ...).
        self.code = code or {
            4401: "unauthorized",
            4402: "quota_exceeded",
            4403: "forbidden",
            4429: "rate_limited",
            4503: "unavailable",
        }.get(close_code, "access_denied")


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Per-key limits; None = the server default, 0 = unlimited."""

    max_concurrent_streams: int | None = None
    sessions_per_minute: int | None = None
    audio_seconds_per_day: float | None = None
    audio_seconds_per_month: float | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What is stored about a key. The secret itself is never stored, only its SHA-256."""

    id: str
    name: str
    key_hash: str
    created_at: float
    revoked: bool = False
    allowed_models: tuple[str, ...] = ()  # globs; empty = all
    allowed_origins: tuple[str, ...] = ()  # empty = any
    expires_at: float | None = None
    limits: KeyLimits = field(default_factory=KeyLimits)

    def public(self) -> dict[str, Any]:
        """JSON view without the hash (for the admin API and the CLI)."""
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "revoked": self.revoked,
            "allowed_models": list(self.allowed_models),
            "allowed_origins": list(self.allowed_origins),
            "expires_at": self.expires_at,
            "max_concurrent_streams": self.limits.max_concurrent_streams,
            "sessions_per_minute": self.limits.sessions_per_minute,
            "audio_seconds_per_day": self.limits.audio_seconds_per_day,
            "audio_seconds_per_month": self.limits.audio_seconds_per_month,
        }


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the key (or the key behind a short-lived token)."""

    key: KeyRecord
    via_token: bool = False

    @property
    def key_id(self) -> str:
        return self.key.id


class Admission(ABC):
    """A granted session: holds a concurrency lease and meters usage until released."""

    exhausted: bool = False

    @abstractmethod
    async def record_usage(self, audio_seconds: float, model_id: str) -> None:
        """Add audio seconds (a delta) to the key's usage; may set `exhausted`."""

    @abstractmethod
    def warnings(self) -> list[tuple[str, str]]:
        """New (code, message) warnings since the last call, e.g. quota at 90 %."""

    @abstractmethod
    async def release(self) -> None:
        """End the session: flush usage, free the lease. Idempotent."""


class AccessControl(ABC):
    @abstractmethod
    async def authenticate(self, secret: str | None, *, client: str | None = None) -> Principal:
        """Resolve a key or token; raises `AccessDenied` (4401, 4429 for brute force, 4503)."""

    @abstractmethod
    async def admit(self, principal: Principal, model_id: str, *,
                    origin: str | None = None) -> Admission:
        """Check model/origin rights and limits, take a lease; raises `AccessDenied`."""

    async def ready(self) -> bool:
        """Is the backing store reachable (for /readyz)?"""
        return True

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections at shutdown."""
