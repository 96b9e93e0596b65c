"""Every key rule end to end: real gateway (uvicorn), real Redis, real WebSocket clients,
the local engine on real speech. Each refusal is checked with its close code and reason."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import redis as redis_sync

from tests.auth.e2e_client import (
    ADMIN_TOKEN,
    admin,
    create_key,
    finish,
    open_stream,
    read_until,
    refusal,
)
from tests.auth.redis_restart import persistent_redis, start_again
from tests.servers import Gateway, RedisServer, running_gateway
from tests.speech import pcm

E2E_DB = 6
SPEECH = pcm("beckett.wav")  # 9.96 s


@pytest.fixture(scope="module")
def limits_gateway(redis: RedisServer) -> Iterator[Gateway]:
    url = f"redis://127.0.0.1:{redis.port}/{E2E_DB}"
    with redis_sync.Redis.from_url(url) as client:
        client.flushdb()
    with running_gateway(redis_url=url, admin_token=ADMIN_TOKEN,
                         failed_auth_per_minute=1000) as gw:
        yield gw


async def test_refusals_name_their_cause(limits_gateway: Gateway) -> None:
    gw = limits_gateway
    cases = []
    cases.append((await refusal(gw.ws_url, "sg_live_unknown"), 4401, "invalid API key"))
    revoked_id, revoked = await create_key(gw.http_url)
    await admin(gw.http_url, "DELETE", f"/v1/admin/keys/{revoked_id}")
    cases.append((await refusal(gw.ws_url, revoked), 4401, "API key revoked"))
    _, expired = await create_key(gw.http_url, expires_at=time.time() - 1)
    cases.append((await refusal(gw.ws_url, expired), 4401, "API key expired"))
    _, picky = await create_key(gw.http_url, allowed_models=["deepgram.*"],
                                allowed_origins=["https://app.example.com"])
    cases.append((await refusal(gw.ws_url, picky, model="local.tiny.en"), 4403,
                  "key not allowed to use model local.tiny.en"))
    _, browser = await create_key(gw.http_url, allowed_origins=["https://app.example.com"])
    cases.append((await refusal(gw.ws_url, browser, origin="https://evil.example"), 4403,
                  "key not allowed from this Origin"))
    for found, code, reason in cases:
        assert (found.close_code, found.reason) == (code, reason)
        assert found.error.get("message") == reason
    ws = await open_stream(gw.ws_url, browser, origin="https://app.example.com")
    await finish(ws)


async def test_concurrent_streams_4429(limits_gateway: Gateway) -> None:
    gw = limits_gateway
    _, secret = await create_key(gw.http_url, max_concurrent_streams=1)
    held = await open_stream(gw.ws_url, secret)
    second = await refusal(gw.ws_url, secret)
    assert second.close_code == 4429
    assert second.reason == "too many concurrent streams for this key (limit 1)"
    assert second.error["code"] == "too_many_streams" and second.error["retry_after"] > 0
    ended = await finish(held)
    assert ended[-1]["type"] == "session.ended"
    await finish(await open_stream(gw.ws_url, secret))  # the slot is free again


async def test_sessions_per_minute_4429(limits_gateway: Gateway) -> None:
    gw = limits_gateway
    _, secret = await create_key(gw.http_url, sessions_per_minute=2)
    for _ in range(2):
        await finish(await open_stream(gw.ws_url, secret))
    third = await refusal(gw.ws_url, secret)
    assert third.close_code == 4429
    assert third.reason == "too many new sessions for this key (limit 2 per minute)"
    assert 0 < third.error["retry_after"] <= 60


async def test_quota_warning_then_4402(limits_gateway: Gateway) -> None:
    gw = limits_gateway
    _, secret = await create_key(gw.http_url, audio_seconds_per_day=10.5)
    ws = await open_stream(gw.ws_url, secret)
    await ws.send(SPEECH)  # 9.96 s: over 90 % of 10.5 s
    warning = await read_until(ws, "warning")
    assert warning["code"] == "quota_warning" and "daily audio quota" in warning["message"]
    await ws.send(SPEECH[:32000])  # one more second: over the quota
    error = await read_until(ws, "error")
    assert error["code"] == "quota_exceeded"
    with pytest.raises(Exception):  # noqa: B017 - the server closes now
        await read_until(ws, "never")
    assert ws.close_code == 4402
    again = await refusal(gw.ws_url, secret)
    assert (again.close_code, again.reason) == (4402, "daily audio quota exhausted (10.5 s)")


async def test_tokens_and_usage_over_the_websocket(limits_gateway: Gateway) -> None:
    gw = limits_gateway
    key_id, secret = await create_key(gw.http_url, allowed_models=["local.*"])
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        minted = await http.post("/v1/auth/tokens", json={"ttl_seconds": 120},
                                 headers={"Authorization": f"Bearer {secret}"})
        token = minted.json()["token"]
        ws = await open_stream(gw.ws_url, token)
        await ws.send(SPEECH)
        messages = await finish(ws)
        ended = messages[-1]
        assert ended["type"] == "session.ended"
        assert "fail better" in " ".join(m["text"] for m in messages
                                         if m.get("type") == "transcript"
                                         and m["is_final"]).lower()
        usage = (await http.get("/v1/usage", headers={"X-API-Key": secret})).json()
        (today,) = usage["days"]
        assert today["audio_seconds"] == pytest.approx(ended["usage"]["audio_seconds"], abs=0.01)
        assert today["models"]["local.tiny.en"]["sessions"] == 1
        await admin(gw.http_url, "DELETE", f"/v1/admin/keys/{key_id}")
        revoked = await refusal(gw.ws_url, token)
        # Revoking the key dropped its tokens: the token is simply unknown now.
        assert (revoked.close_code, revoked.reason) == (4401, "invalid API key")


async def test_failed_attempts_per_address_4429() -> None:
    with running_gateway(failed_auth_per_minute=2) as gw:
        for _ in range(2):
            assert (await refusal(gw.ws_url, "sg_live_guess")).close_code == 4401
        blocked = await refusal(gw.ws_url, "sg_live_guess")
        assert (blocked.close_code, blocked.error["code"]) == (4429, "too_many_failed_attempts")
        assert (await refusal(gw.ws_url, gw.dev_key)).close_code == 4429


async def test_redis_down_at_session_start_4503() -> None:
    with persistent_redis() as own, running_gateway(redis_url=own.url,
                                                admin_token=ADMIN_TOKEN) as gw:
        _, fresh = await create_key(gw.http_url)
        own.stop()
        down = await refusal(gw.ws_url, fresh)
        assert (down.close_code, down.error["code"]) == (4503, "store_unavailable")
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            assert (await http.get("/readyz")).status_code == 503
        start_again(own)
        deadline = time.monotonic() + 10
        while True:  # the gateway reconnects by itself
            try:
                ws = await open_stream(gw.ws_url, fresh)
                break
            except Exception:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        await ws.send(json.dumps({"type": "keepalive"}))
        await finish(ws)
