"""Keys, tokens, limits and metering — storage behind one interface (memory or Redis).

The app builds one access control from the settings and calls ``await access.start()`` at
startup and ``await access.aclose()`` at shutdown::

    access = build_access_control(settings)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from auth.access import DEFAULT_LEASE_TTL, GatewayAccessControl, resolve_quotas
from auth.backend import Backend, Quotas, StoreUnavailable
from auth.base import AccessControl, AccessDenied, Admission, KeyLimits, KeyRecord, Principal
from auth.memory import MemoryBackend
from auth.store import KeyNotFound, KeyStore

if TYPE_CHECKING:
    from config import Settings

# Lease TTL in seconds (0 < ttl <= 60): how long a crashed process's concurrency slots stay
# taken. Read from the setting `lease_ttl_seconds` if config defines it, else this variable.
LEASE_TTL_ENV = "SPEECHGATE_LEASE_TTL_SECONDS"

__all__ = [
    "AccessControl", "AccessDenied", "Admission", "Backend", "GatewayAccessControl",
    "KeyLimits", "KeyNotFound", "KeyRecord", "KeyStore", "MemoryBackend", "Principal", "Quotas",
    "StoreUnavailable", "build_access_control", "build_backend", "lease_ttl_from",
    "resolve_quotas",
]


def lease_ttl_from(settings: Settings) -> float:
    value = getattr(settings, "lease_ttl_seconds", None)
    if value is None:
        value = os.environ.get(LEASE_TTL_ENV) or DEFAULT_LEASE_TTL
    return float(value)


def build_backend(settings: Settings) -> Backend:
    """Redis when `redis_url` is set, else the in-process backend. Not connected yet."""
    if settings.redis_url:
        from auth.redis_store import RedisBackend

        return RedisBackend(settings.redis_url)
    return MemoryBackend()


def build_access_control(settings: Settings) -> GatewayAccessControl:
    defaults = Quotas(
        max_concurrent_streams=settings.default_max_concurrent_streams,
        sessions_per_minute=settings.default_sessions_per_minute,
        audio_seconds_per_day=settings.default_audio_seconds_per_day,
        audio_seconds_per_month=settings.default_audio_seconds_per_month,
    )
    return GatewayAccessControl(
        build_backend(settings),
        defaults=defaults,
        fail_open=settings.limits_fail_open,
        failed_auth_per_minute=settings.failed_auth_per_minute,
        lease_ttl=lease_ttl_from(settings),
        anonymous_key_id=settings.anonymous_key_id,
    )
