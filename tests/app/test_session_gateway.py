"""Session promises through a real gateway (uvicorn, real WebSocket clients, the local engine):
release before close, and rights for every model a session may touch."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
import redis as redis_sync
from websockets.asyncio.client import ClientConnection

from tests.auth.e2e_client import ADMIN_TOKEN, create_key, open_stream, read_until, refusal
from tests.fakes.deepgram import FakeDeepgram
from tests.servers import Gateway, RedisServer, running_gateway
from tests.speech import pcm
from tests.wsclient import transcribe

SPEECH = pcm("beckett.wav")  # 9.96 s
SHORT = SPEECH[:16000]  # 0.5 s of speech
SESSIONS_DB = 7


@contextlib.contextmanager
def gateway_on(store: str, request: pytest.FixtureRequest, **settings: object) -> Iterator[Gateway]:
    overrides: dict[str, object] = {"admin_token": ADMIN_TOKEN, "failed_auth_per_minute": 1000,
                                    **settings}
    if store == "redis":
        redis: RedisServer = request.getfixturevalue("redis")
        url = f"redis://127.0.0.1:{redis.port}/{SESSIONS_DB}"
        with redis_sync.Redis.from_url(url) as client:
            client.flushdb()
        overrides["redis_url"] = url
    with running_gateway(**overrides) as gw:
        yield gw


@pytest.fixture(params=["memory", "redis"])
def gateway(request: pytest.FixtureRequest) -> Iterator[Gateway]:
    with gateway_on(request.param, request) as gw:
        yield gw


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_back_to_back_sessions_on_one_stream_key_are_never_refused(
        store: str, request: pytest.FixtureRequest) -> None:
    """The lease is released before the last event: a client that reconnects the moment it
    reads ``session.ended`` (before the close frame even arrives) is admitted, 40 times in a
    row (a cloud provider and the local engine in turn); each session still ends 1000."""
    async with FakeDeepgram(api_key="dg-key") as fake:
        with gateway_on(store, request, deepgram_api_key="dg-key",
                        deepgram_base_url=fake.url) as gw:
            _, secret = await create_key(gw.http_url, max_concurrent_streams=1)
            ended: list[ClientConnection] = []
            try:
                for i in range(40):
                    model = "deepgram.nova-3" if i % 2 else "local.tiny.en"
                    ws = await open_stream(gw.ws_url, secret, model=model)
                    ended.append(ws)
                    await ws.send(SHORT)
                    await ws.send(json.dumps({"type": "close_stream"}))
                    await read_until(ws, "session.ended")  # the next one starts at once
                for ws in ended:
                    await ws.wait_closed()
            finally:
                for ws in ended:
                    await ws.close()
            # And through the plain client, reconnecting once the socket is closed.
            result = await transcribe(gw.ws_url, SHORT, key=secret,
                                      params={"model": "local.tiny.en"})
    assert {(ws.close_code, ws.close_reason) for ws in ended} == {(1000, "session ended")}
    assert result.close_code == 1000


async def test_fallback_model_needs_the_right_too(gateway: Gateway) -> None:
    _, secret = await create_key(gateway.http_url, allowed_models=["assemblyai.*"])
    refused = await refusal(gateway.ws_url, secret,
                            model="assemblyai.universal-streaming-english",
                            fallback="deepgram.nova-3")
    assert (refused.close_code, refused.reason) == (
        4403, "key not allowed to use model deepgram.nova-3")
    assert refused.error["code"] == "model_not_allowed"
    # Allowed fallbacks pass the check (then the unconfigured providers answer 4503).
    other = await refusal(gateway.ws_url, secret,
                          model="assemblyai.universal-streaming-english",
                          fallback="assemblyai.universal-streaming-multilingual")
    assert other.close_code == 4503
