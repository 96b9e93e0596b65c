"""Secrets and tokens: how they look, how they are generated and hashed.

A key secret is ``sg_live_`` + 43 URL-safe characters (32 random bytes). A short-lived token is
``sg_tok_<key_id>.`` + 43 URL-safe characters: the key id in clear lets the store find the
token's hash under the key's own hash tag. Only SHA-256 hashes are ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "sg_live_"
TOKEN_PREFIX = "sg_tok_"
SECRET_BYTES = 32


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def key_id_for_secret(secret: str) -> str:
    """A stable id for a secret registered by the operator (the dev key), so that several
    processes registering the same secret at once agree on one record."""
    digest = hashlib.sha256(b"speechgate-key-id\x00" + secret.encode()).hexdigest()
    return "key_" + digest[:16]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_token(key_id: str) -> str:
    return f"{TOKEN_PREFIX}{key_id}." + secrets.token_urlsafe(SECRET_BYTES)


def token_key_id(token: str) -> str | None:
    """The key id a token belongs to, or None if the string is not shaped like a token."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, dot, rest = token[len(TOKEN_PREFIX):].partition(".")
    if not dot or not rest or not key_id.startswith("key_") or len(key_id) > 64:
        return None
    if not all(c.isalnum() or c == "_" for c in key_id):
        return None
    return key_id
