"""Where a client's key is found (shared/API.md §1.1), in one place for every front-end."""

from __future__ import annotations

from collections.abc import Mapping


def key_from_request(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """First match wins: ``Authorization: Bearer``, ``X-API-Key``, ``api_key``/``token`` query."""
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    api_key = headers.get("x-api-key", "").strip()
    if api_key:
        return api_key
    for name in ("api_key", "token"):
        value = (query.get(name) or "").strip()
        if value:
            return value
    return None
