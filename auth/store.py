"""The key store: lifecycle of API keys and short-lived tokens on top of a `Backend`.

Used by the access control (resolve secrets and tokens), the admin HTTP routes and the CLI
(create, list, show, update, revoke, rotate, usage). Secrets are returned once, on create and
rotate, and never stored: only their SHA-256.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

from auth import credentials
from auth.backend import Backend, Lookup, Period
from auth.base import KeyLimits, KeyRecord

MAX_TOKEN_TTL = 600.0
LIMIT_FIELDS = ("max_concurrent_streams", "sessions_per_minute", "audio_seconds_per_day",
                "audio_seconds_per_month")
KEY_FIELDS = ("name", "allowed_models", "allowed_origins", "expires_at", *LIMIT_FIELDS)


class KeyNotFound(LookupError):
    """No key with this id."""


def _string_list(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name} must be a list of non-empty strings")
    return tuple(value)


def _limit(name: str, value: Any) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a number >= 0 (0 = unlimited) or null (server default)")
    if name in ("max_concurrent_streams", "sessions_per_minute"):
        if value != int(value):
            raise ValueError(f"{name} must be a whole number")
        return int(value)
    return float(value)


def validate_key_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Check a create/update request (JSON or CLI) and return the normalized fields.

    Raises ValueError naming the offending field."""
    unknown = sorted(set(data) - set(KEY_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    fields: dict[str, Any] = {}
    for name, value in data.items():
        if name == "name":
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                raise ValueError("name must be a non-empty string (at most 200 characters)")
            fields[name] = value.strip()
        elif name in ("allowed_models", "allowed_origins"):
            fields[name] = _string_list(name, value)
        elif name == "expires_at":
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float)):
                raise ValueError("expires_at must be a Unix time in seconds or null")
            fields[name] = None if value is None else float(value)
        else:
            fields[name] = _limit(name, value)
    return fields


def _apply(record: KeyRecord, fields: dict[str, Any]) -> KeyRecord:
    limit_changes = {k: v for k, v in fields.items() if k in LIMIT_FIELDS}
    other = {k: v for k, v in fields.items() if k not in LIMIT_FIELDS}
    limits = dataclasses.replace(record.limits, **limit_changes)
    return dataclasses.replace(record, limits=limits, **other)


# Secret hash -> key id is immutable once written, so found ids are cached (never misses):
# a stale entry after a rotation is caught by comparing the record's hash.
KEY_ID_CACHE_SIZE = 4096


class KeyStore:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._key_ids: OrderedDict[str, str] = OrderedDict()

    # --- lifecycle ---------------------------------------------------------------------
    async def create(self, name: str, **fields: Any) -> tuple[KeyRecord, str]:
        """Create a key; returns the record and the secret (shown once)."""
        values = validate_key_fields({"name": name, **fields})
        secret = credentials.new_secret()
        key_id = credentials.new_key_id()
        record = _apply(KeyRecord(id=key_id, name=values.pop("name"),
                                  key_hash=credentials.hash_secret(secret),
                                  created_at=time.time(), limits=KeyLimits()), values)
        await self.backend.put_key(record)
        await self.backend.claim_hash(record.key_hash, key_id)
        return record, secret

    async def ensure(self, secret: str, name: str) -> KeyRecord:
        """Register a given secret (the dev key) if it is not known yet. Idempotent, and safe
        when several processes do it at once: they derive the same key id."""
        key_hash = credentials.hash_secret(secret)
        key_id = await self.backend.claim_hash(key_hash,
                                               credentials.key_id_for_secret(secret))
        existing = await self.backend.get_key(key_id)
        if existing is not None and credentials.same_hash(existing.key_hash, key_hash):
            return existing
        record = KeyRecord(id=key_id, name=name, key_hash=key_hash, created_at=time.time())
        await self.backend.put_key(record)
        return record

    async def get(self, key_id: str) -> KeyRecord | None:
        return await self.backend.get_key(key_id)

    async def require(self, key_id: str) -> KeyRecord:
        record = await self.backend.get_key(key_id)
        if record is None:
            raise KeyNotFound(key_id)
        return record

    async def list(self) -> list[KeyRecord]:
        records = [await self.backend.get_key(key_id)
                   for key_id in await self.backend.list_key_ids()]
        return sorted((r for r in records if r is not None), key=lambda r: r.created_at)

    async def update(self, key_id: str, **fields: Any) -> KeyRecord:
        record = _apply(await self.require(key_id), validate_key_fields(fields))
        await self.backend.put_key(record)
        return record

    async def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key and every token minted from it, at once."""
        record = dataclasses.replace(await self.require(key_id), revoked=True)
        await self.backend.put_key(record)
        await self.backend.drop_tokens(key_id)
        return record

    async def rotate(self, key_id: str) -> tuple[KeyRecord, str]:
        """Give a key a new secret (same id, limits and usage); the old secret and all its
        tokens stop working at once."""
        old = await self.require(key_id)
        secret = credentials.new_secret()
        record = dataclasses.replace(old, key_hash=credentials.hash_secret(secret))
        await self.backend.claim_hash(record.key_hash, key_id)
        await self.backend.put_key(record)
        await self.backend.drop_tokens(key_id)
        await self.backend.drop_hash(old.key_hash)
        return record, secret

    # --- resolving secrets -------------------------------------------------------------
    async def resolve(self, secret: str) -> tuple[KeyRecord, float | None] | None:
        """The key behind a secret or token (and the token's expiry), or None if unknown.

        Revoked and expired keys are returned as they are: the caller says why they fail."""
        found = await self.lookup(secret)
        if found.record is None:
            return None
        return found.record, found.token_expires_at

    async def lookup(self, secret: str, *, client: str | None = None) -> Lookup:
        """Like `resolve`, also fetching ``client``'s failed attempts in the same round trip.
        ``record`` is None for an unknown key, a wrong secret or a dead token."""
        key_hash = credentials.hash_secret(secret)
        token_key = credentials.token_key_id(secret)
        key_id = token_key or self._key_ids.get(key_hash)
        if key_id is None:
            key_id = await self.backend.find_key_id(key_hash)
            if key_id is None:
                failures = await self.backend.auth_failures(client) if client else (0, 0.0)
                return Lookup(None, None, *failures)
            self._key_ids[key_hash] = key_id
            while len(self._key_ids) > KEY_ID_CACHE_SIZE:
                self._key_ids.popitem(last=False)
        found = await self.backend.lookup(key_id, token_hash=key_hash if token_key else None,
                                          client=client)
        record = found.record
        if token_key is not None:
            expiry = found.token_expires_at
            if expiry is None or expiry <= time.time():
                record = None
        elif record is None or not credentials.same_hash(record.key_hash, key_hash):
            record = None
        return Lookup(record, found.token_expires_at if record else None, found.failures,
                      found.failures_reset_in)

    async def mint_token(self, key_id: str, ttl_seconds: float) -> tuple[str, float]:
        if not 0 < ttl_seconds <= MAX_TOKEN_TTL:
            raise ValueError(f"ttl_seconds must be > 0 and <= {MAX_TOKEN_TTL:g}")
        token = credentials.new_token(key_id)
        expires_at = time.time() + ttl_seconds
        await self.backend.put_token(key_id, credentials.hash_secret(token), expires_at)
        return token, expires_at

    # --- usage -------------------------------------------------------------------------
    async def usage(self, key_id: str, days: int = 30) -> dict[str, Any]:
        """Audio seconds and sessions by day and model for the last ``days`` UTC days."""
        today = datetime.now(UTC).date()
        names = [(today - timedelta(days=n)).isoformat() for n in range(days)]
        month = Period.at().month
        raw = await self.backend.usage(key_id, [*names, month])
        month_fields = raw.pop(month, {})
        rows: list[dict[str, Any]] = []
        total_seconds, total_sessions = 0.0, 0
        for day in sorted(raw):
            fields = raw[day]
            models: dict[str, dict[str, float]] = {}
            for field, value in fields.items():
                kind, _, model = field.partition(":")
                if model:
                    entry = models.setdefault(model, {"audio_seconds": 0.0, "sessions": 0})
                    entry["audio_seconds" if kind == "seconds" else "sessions"] = (
                        round(value, 3) if kind == "seconds" else int(value))
            seconds, sessions = fields.get("seconds", 0.0), int(fields.get("sessions", 0))
            total_seconds += seconds
            total_sessions += sessions
            rows.append({"date": day, "audio_seconds": round(seconds, 3),
                         "sessions": sessions, "models": models})
        return {
            "key_id": key_id,
            "days": rows,
            "total": {"audio_seconds": round(total_seconds, 3), "sessions": total_sessions},
            "month": {"month": month, "audio_seconds": round(month_fields.get("seconds", 0.0), 3)},
        }
