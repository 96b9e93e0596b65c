"""The official ``deepgram-sdk`` live client, unchanged but for its base URL and key, against
``/v1/listen`` on a real gateway: the local engine on real speech and the Deepgram fake
(``nova-3``); real-time pace and as fast as allowed; ``Finalize`` mid-stream; ``CloseStream``;
a wrong key refused on the handshake; the browser subprotocol key."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment

from tests.compat.conftest import no_sessions_left, read_until_closed, refused_handshake
from tests.servers import Gateway
from tests.speech import BECKETT_TEXT, pcm, wer

AUDIO = pcm("beckett.wav")
CHUNK = 3200  # 100 ms of 16 kHz PCM


def client(gw: Gateway, key: str) -> AsyncDeepgramClient:
    env = DeepgramClientEnvironment(base=gw.http_url, production=gw.ws_url, agent=gw.ws_url,
                                    agent_rest=gw.http_url)
    return AsyncDeepgramClient(api_key=key, environment=env)


@dataclass
class Run:
    messages: list[Any] = field(default_factory=list)

    def of(self, kind: str) -> list[Any]:
        return [m for m in self.messages if getattr(m, "type", None) == kind]

    def final_text(self) -> str:
        return " ".join(r.channel.alternatives[0].transcript for r in self.of("Results")
                        if r.is_final and r.channel.alternatives[0].transcript)


async def stream(gw: Gateway, audio: bytes, *, key: str | None = None, pace: float = 0.0,
                 finalize_at: int | None = None, **options: Any) -> Run:
    """Stream `audio` in 100 ms chunks (sleeping `pace` s between them), optionally a
    Finalize after `finalize_at` bytes, then CloseStream; read until the server closes."""
    run = Run()
    dg = client(gw, key or gw.dev_key)
    options.setdefault("model", "local.tiny.en")
    async with dg.listen.v1.connect(encoding="linear16", sample_rate=16000, **options) as sock:
        async def read() -> None:
            async for message in sock:
                run.messages.append(message)

        reader = asyncio.create_task(read())
        for i in range(0, len(audio), CHUNK):
            await sock.send_media(audio[i:i + CHUNK])
            if finalize_at is not None and i <= finalize_at < i + CHUNK:
                await sock.send_finalize()
            if pace:
                await asyncio.sleep(pace)
        await sock.send_close_stream()
        await asyncio.wait_for(reader, 60)
    return run


async def test_local_engine_real_time_with_finalize_mid_stream(compat_gateway: Gateway) -> None:
    run = await stream(compat_gateway, AUDIO, pace=0.1, finalize_at=len(AUDIO) // 2,
                       interim_results="true", punctuate="true", vad_events="true",
                       utterance_end_ms=1000)
    results = run.of("Results")
    assert wer(BECKETT_TEXT, run.final_text()) <= 0.2, run.final_text()
    assert any(not r.is_final for r in results), "interim results were asked for"
    finalized = [r for r in results if r.from_finalize]
    assert finalized and all(r.is_final for r in finalized)
    # Finalize was not terminal: finals after it carry the second half of the speech
    after = results[results.index(finalized[-1]) + 1:]
    assert any(r.is_final and r.channel.alternatives[0].transcript for r in after)
    assert run.messages[-1].type == "Metadata"
    assert run.messages[-1].duration == pytest.approx(len(AUDIO) / 32000, abs=0.05)
    words = [w for r in results if r.is_final for w in r.channel.alternatives[0].words]
    assert words and all(w.punctuated_word and w.word == w.word.lower() for w in words)
    assert all(w.start <= w.end for w in words)
    await no_sessions_left(compat_gateway)


async def test_local_engine_as_fast_as_allowed(compat_gateway: Gateway) -> None:
    run = await stream(compat_gateway, AUDIO)
    assert wer(BECKETT_TEXT, run.final_text()) <= 0.2, run.final_text()
    assert not [r for r in run.of("Results") if not r.is_final]  # interim_results defaults off
    assert run.messages[-1].type == "Metadata"
    await no_sessions_left(compat_gateway)


async def test_deepgram_model_name_through_the_fake(compat_gateway: Gateway) -> None:
    run = await stream(compat_gateway, AUDIO, model="nova-3", interim_results="true",
                       smart_format="true", keyterm=["Beckett", "fail better"],
                       finalize_at=len(AUDIO) // 2, numerals="true")
    assert wer(BECKETT_TEXT, run.final_text()) <= 0.2, run.final_text()
    assert any(r.from_finalize for r in run.of("Results"))
    meta = run.messages[-1]
    assert meta.type == "Metadata"
    extra = json.loads(meta.json()) if hasattr(meta, "json") else {}
    assert extra.get("speechgate", {}).get("model") == "deepgram.nova-3"
    assert extra["speechgate"]["options"]["numerals"] == "ignored"  # accepted and reported


async def test_wrong_key_is_refused_on_the_handshake(compat_gateway: Gateway) -> None:
    with pytest.raises(ApiError) as info:
        await stream(compat_gateway, AUDIO[:CHUNK], key="sg_wrong_key")
    assert info.value.status_code == 401
    await no_sessions_left(compat_gateway)


async def test_bad_option_is_a_400_naming_it(compat_gateway: Gateway) -> None:
    url = f"{compat_gateway.ws_url}/v1/listen?model=nova-3&encoding=mulaw&sample_rate=8000"
    response = await refused_handshake(url, f"Token {compat_gateway.dev_key}")
    assert response.status_code == 400
    assert "encoding" in response.headers["dg-error"]


async def test_browser_subprotocol_key_and_keepalive(compat_gateway: Gateway) -> None:
    """Browsers (and the JS SDK there) send ``Sec-WebSocket-Protocol: token, <key>``; the
    server must echo ``token``. KeepAlive and an unknown message do not end the stream."""
    url = f"{compat_gateway.ws_url}/v1/listen?model=local.tiny.en&encoding=linear16" \
          "&sample_rate=16000"
    async with websockets.connect(url, subprotocols=[  # type: ignore[list-item]
            "token", compat_gateway.dev_key]) as ws:
        assert ws.subprotocol == "token"
        await ws.send(json.dumps({"type": "KeepAlive"}))
        await ws.send(json.dumps({"type": "Bogus"}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["type"] == "Error" and error["variant"] == "SchemaError"
        for i in range(0, len(AUDIO), 32000):
            await ws.send(AUDIO[i:i + 32000])
        await ws.send(json.dumps({"type": "CloseStream"}))
        messages = [json.loads(m) async for m in ws]
        assert ws.close_code == 1000
    assert messages[-1]["type"] == "Metadata"
    text = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in messages
                    if m["type"] == "Results" and m["is_final"])
    assert wer(BECKETT_TEXT, text) <= 0.2, text


async def test_idle_stream_closes_like_deepgram(compat_gateway: Gateway) -> None:
    """No audio and no KeepAlive: an Error message, then 1011 NET-0001 (Deepgram's close);
    the server holds no session afterwards."""
    url = f"{compat_gateway.ws_url}/v1/listen?model=local.tiny.en&encoding=linear16" \
          "&sample_rate=16000"
    async with websockets.connect(url, additional_headers={
            "Authorization": f"Bearer {compat_gateway.dev_key}"}) as ws:
        await ws.send(AUDIO[:CHUNK])
        messages = await read_until_closed(ws)
    assert ws.close_code == 1011 and ws.close_reason.startswith("NET-0001")
    assert messages[-1]["type"] == "Error" and "idle" in messages[-1]["description"]
    await no_sessions_left(compat_gateway)


async def test_unconfigured_provider_is_a_503_naming_the_variable(gateway: Gateway) -> None:
    """The plain gateway has no Deepgram credentials: the handshake says which variable to
    set, once ("deepgram is not configured", not "deepgram deepgram ...")."""
    url = f"{gateway.ws_url}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000"
    response = await refused_handshake(url, f"Token {gateway.dev_key}")
    assert response.status_code == 503
    assert response.headers["dg-error"] == "deepgram is not configured: set DEEPGRAM_API_KEY"
    assert json.loads(response.body or b"{}")["err_msg"] == response.headers["dg-error"]


async def test_refused_handshake_logs_no_server_error(compat_gateway: Gateway) -> None:
    """uvicorn would log an ERROR after every denial response; a refused key is not one."""
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.ERROR)
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        with pytest.raises(ApiError):
            await stream(compat_gateway, AUDIO[:CHUNK], key="sg_wrong_key")
        await asyncio.sleep(0.2)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert not [r for r in records if "handshake" in r.getMessage()], records
