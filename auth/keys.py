"""Every Redis key name Speechgate uses, built here and nowhere else.

All data of one API key shares the hash tag ``{<key_id>}`` so the multi-key Lua scripts
(admission, usage) touch a single slot and work on Redis Cluster. Global lookups (secret hash
-> key id, the key list, failed-auth counters) are single-key operations and need no tag.
"""

from __future__ import annotations

PREFIX = "sg"


def key_record(key_id: str) -> str:
    """Hash with the stored fields of one API key (never the secret, only its SHA-256)."""
    return f"{PREFIX}:{{{key_id}}}:key"


def key_leases(key_id: str) -> str:
    """Sorted set of live concurrency leases, scored by expiry (ms since epoch)."""
    return f"{PREFIX}:{{{key_id}}}:leases"


def key_starts(key_id: str) -> str:
    """Sorted set of session starts in the last minute (sliding window), scored by ms."""
    return f"{PREFIX}:{{{key_id}}}:starts"


def key_tokens(key_id: str) -> str:
    """Hash of short-lived token hashes -> expiry (s since epoch); deleted on revoke/rotate."""
    return f"{PREFIX}:{{{key_id}}}:tokens"


def usage_day(key_id: str, day: str) -> str:
    """Hash of usage for one UTC day (``YYYY-MM-DD``): seconds, seconds:<model>, sessions..."""
    return f"{PREFIX}:{{{key_id}}}:usage:{day}"


def usage_month(key_id: str, month: str) -> str:
    """Hash of usage for one UTC month (``YYYY-MM``)."""
    return f"{PREFIX}:{{{key_id}}}:usage:{month}"


def hash_index(key_hash: str) -> str:
    """String: SHA-256 of a secret -> key id."""
    return f"{PREFIX}:keyhash:{key_hash}"


def all_keys() -> str:
    """Set of all key ids (for listing)."""
    return f"{PREFIX}:keys"


def auth_failures(client: str) -> str:
    """Counter of failed key attempts from one client address in the current minute."""
    return f"{PREFIX}:authfail:{client}"
