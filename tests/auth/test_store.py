"""The key store against every backend (memory, Redis, Redis Cluster)."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
import redis as redis_sync

from auth import credentials
from auth.store import KeyNotFound
from tests.auth.conftest import MakeAccess


async def test_create_returns_a_prefixed_random_secret_shown_once(make_access: MakeAccess) -> None:
    access = await make_access()
    record, secret = await access.store.create("alice")
    assert secret.startswith("sg_live_")
    raw = base64.urlsafe_b64decode(secret[len("sg_live_"):] + "=")
    assert len(raw) >= 32
    assert record.key_hash == credentials.hash_secret(secret)
    assert "key_hash" not in record.public() and secret not in str(record.public())
    _, other = await access.store.create("bob")
    assert other != secret
    shown = await access.store.get(record.id)
    assert shown == record


async def test_secret_is_never_stored(make_access: MakeAccess,
                                      store_kind: tuple[str, str | None]) -> None:
    access = await make_access()
    record, secret = await access.store.create("alice", max_concurrent_streams=3)
    principal = await access.authenticate(secret, client="10.0.0.1")
    token, _ = await access.mint_token(principal, 60)
    admission = await access.admit(principal, "local.tiny.en")
    await admission.record_usage(1.5, "local.tiny.en")
    await admission.release()
    kind, url = store_kind
    if kind == "memory":
        dump = repr(vars(access.backend))
    else:
        assert url is not None
        ports = [int(url.split(":")[2].split("/")[0])]
        if kind == "cluster":
            with redis_sync.Redis(port=ports[0]) as node:
                ports = [int(n.split(":")[1].split("@")[0])
                         for n in node.cluster("nodes")]  # type: ignore[union-attr]
        dump = ""
        for port in ports:
            db = int(url.rsplit("/", 1)[1]) if kind == "redis" else 0
            with redis_sync.Redis(port=port, db=db, decode_responses=True) as client:
                for name in client.scan_iter():
                    dump += name + repr(client.dump(name))
    assert record.id in dump
    assert secret not in dump and token not in dump
    assert secret[len("sg_live_"):] not in dump


async def test_list_show_update_revoke_rotate(make_access: MakeAccess) -> None:
    access = await make_access()
    first, _ = await access.store.create("first")
    second, secret = await access.store.create(
        "second", allowed_models=["local.*"], sessions_per_minute=5)
    assert [r.id for r in await access.store.list()] == [first.id, second.id]

    updated = await access.store.update(second.id, name="renamed", audio_seconds_per_day=60,
                                        allowed_origins=["https://app.example"])
    assert updated.name == "renamed"
    assert updated.limits.audio_seconds_per_day == 60.0
    assert updated.limits.sessions_per_minute == 5  # untouched fields stay
    assert updated.allowed_models == ("local.*",)
    assert await access.store.get(second.id) == updated

    rotated, new_secret = await access.store.rotate(second.id)
    assert new_secret != secret and rotated.id == second.id and rotated.limits == updated.limits
    assert await access.store.resolve(secret) is None
    assert (await access.store.resolve(new_secret)) == (rotated, None)

    revoked = await access.store.revoke(second.id)
    assert revoked.revoked and (await access.store.get(second.id)).revoked  # type: ignore[union-attr]
    with pytest.raises(KeyNotFound):
        await access.store.update("key_missing", name="x")
    with pytest.raises(KeyNotFound):
        await access.store.revoke("key_missing")


@pytest.mark.parametrize("fields, message", [
    ({"max_concurrent_streams": -1}, "max_concurrent_streams"),
    ({"sessions_per_minute": 1.5}, "sessions_per_minute"),
    ({"audio_seconds_per_day": "lots"}, "audio_seconds_per_day"),
    ({"allowed_models": [1]}, "allowed_models"),
    ({"expires_at": "tomorrow"}, "expires_at"),
    ({"colour": "red"}, "colour"),
])
async def test_invalid_fields_are_refused_by_name(make_access: MakeAccess,
                                                  fields: dict[str, object],
                                                  message: str) -> None:
    access = await make_access()
    with pytest.raises(ValueError, match=message):
        await access.store.create("x", **fields)


async def test_ensure_key_is_idempotent_across_processes(make_access: MakeAccess) -> None:
    one, two = await make_access(), await make_access()
    secret = "sg_dev_" + "ab" * 16
    records = await asyncio.gather(one.ensure_key(secret, "dev"), two.ensure_key(secret, "dev"),
                                   one.ensure_key(secret, "dev"))
    assert len({r.id for r in records}) == 1
    assert [r.id for r in await one.store.list()] == [records[0].id]
    assert (await two.authenticate(secret)).key_id == records[0].id


async def test_tokens_carry_the_key_and_die_with_it(make_access: MakeAccess) -> None:
    access = await make_access()
    record, secret = await access.store.create("browser", allowed_models=["local.*"])
    token, expires_at = await access.store.mint_token(record.id, 120)
    assert token.startswith("sg_tok_") and expires_at == pytest.approx(time.time() + 120, abs=5)
    assert (await access.store.resolve(token)) == (record, expires_at)
    assert await access.store.resolve(token[:-2] + "xx") is None
    with pytest.raises(ValueError, match="ttl_seconds"):
        await access.store.mint_token(record.id, 601)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await access.store.mint_token(record.id, 0)
    short, _ = await access.store.mint_token(record.id, 0.2)
    await asyncio.sleep(0.3)  # let the token's lifetime pass
    assert await access.store.resolve(short) is None

    await access.store.rotate(record.id)
    assert await access.store.resolve(token) is None  # rotation drops tokens too


async def test_usage_by_day_and_model(make_access: MakeAccess) -> None:
    access = await make_access()
    record, secret = await access.store.create("meter")
    principal = await access.authenticate(secret)
    first = await access.admit(principal, "local.tiny.en")
    await first.record_usage(2.5, "local.tiny.en")
    await first.record_usage(1.0, "local.tiny.en")
    await first.release()
    second = await access.admit(principal, "deepgram.nova-3")
    await second.record_usage(4.0, "deepgram.nova-3")
    await second.release()
    usage = await access.store.usage(record.id)
    (today,) = usage["days"]
    assert today["audio_seconds"] == pytest.approx(7.5)
    assert today["sessions"] == 2
    assert today["models"] == {"local.tiny.en": {"audio_seconds": 3.5, "sessions": 1},
                               "deepgram.nova-3": {"audio_seconds": 4.0, "sessions": 1}}
    assert usage["total"] == {"audio_seconds": 7.5, "sessions": 2}
    assert usage["month"]["audio_seconds"] == pytest.approx(7.5)
