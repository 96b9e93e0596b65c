"""``/api/v1/ws``: what the xrx orchestrator does, with a plain `websockets` client.

xrx (https://github.com/8090-inc/xrx-core, orchestrator/src/Session.ts) opens
``ws://host/api/v1/ws`` with no key and, for faster_whisper/groq, sends one binary frame per
VAD-cut utterance and reads one text frame back; for deepgram it streams small chunks.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from app.errors import GatewayError
from app.frontends.xrx import provider_model
from tests.frontends.conftest import ADMIN_TOKEN, ANONYMOUS_KEY_ID
from tests.servers import Gateway, running_gateway
from tests.speech import BECKETT_TEXT, pcm, wer

MAX_WER = 0.25


async def read_until_close(ws: websockets.ClientConnection) -> list[str]:
    texts: list[str] = []
    try:
        async for message in ws:
            assert isinstance(message, str)
            texts.append(message)
    except ConnectionClosed:
        pass
    return texts


async def test_keyless_utterances_get_one_text_frame_each(keyless_gateway: Gateway) -> None:
    beckett = pcm("beckett.wav")
    silence = bytes(int(0.3 * 16000) * 2)  # xrx sends ~250 ms of trailing silence
    async with websockets.connect(f"{keyless_gateway.ws_url}/api/v1/ws") as ws:
        first = beckett + silence
        await ws.send(first)
        text1 = await asyncio.wait_for(ws.recv(), 60)
        # The orchestrator sends nothing between utterances: longer than idle_timeout (1 s).
        await asyncio.sleep(2.0)
        await ws.send(first)
        text2 = await asyncio.wait_for(ws.recv(), 60)
    assert isinstance(text1, str) and isinstance(text2, str)
    assert wer(BECKETT_TEXT, text1) <= MAX_WER, text1
    assert wer(BECKETT_TEXT, text2) <= MAX_WER, text2


async def test_stream_mode_returns_finals_as_they_come(gateway: Gateway) -> None:
    speech = pcm("beckett.wav")
    async with websockets.connect(f"{gateway.ws_url}/api/v1/ws?mode=stream",
                                  additional_headers={"X-API-Key": gateway.dev_key}) as ws:
        for i in range(0, len(speech), 3200):
            await ws.send(speech[i:i + 3200])
        await ws.send(b"")  # end of stream: remaining finals, then close 1000
        texts = await read_until_close(ws)
    assert ws.close_code == 1000
    assert len(texts) > 1, texts  # several finals, each its own frame
    assert wer(BECKETT_TEXT, " ".join(texts)) <= MAX_WER, texts


async def test_without_key_and_without_anonymous_setting_closes_4401(gateway: Gateway) -> None:
    async with websockets.connect(f"{gateway.ws_url}/api/v1/ws") as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4401
    assert "anonymous_key_id" in (ws.close_reason or "")


async def test_bad_key_closes_4401(keyless_gateway: Gateway) -> None:
    async with websockets.connect(f"{keyless_gateway.ws_url}/api/v1/ws?api_key=sg_wrong") as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4401


def test_stt_provider_mapping() -> None:
    assert provider_model("faster_whisper", "local.tiny.en") == "local.tiny.en"
    assert provider_model("groq", "local.tiny.en") == "groq.whisper-large-v3-turbo"
    assert provider_model("deepgram", "local.tiny.en") == "deepgram.nova-3"
    assert provider_model("openai.gpt-4o-transcribe", "x.y") == "openai.gpt-4o-transcribe"
    with pytest.raises(GatewayError) as info:
        provider_model("whisperx", "local.tiny.en")
    assert info.value.close_code == 4404


async def test_stt_provider_setting_picks_the_model() -> None:
    """STT_PROVIDER=deepgram with no Deepgram key: the session asks for deepgram.nova-3."""
    with running_gateway(stt_provider="deepgram", deepgram_api_key=None) as gw:
        async with websockets.connect(f"{gw.ws_url}/api/v1/ws",
                                      additional_headers={"X-API-Key": gw.dev_key}) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 20)
    assert ws.close_code == 4503, ws.close_reason
    assert "deepgram" in (ws.close_reason or "").lower()


async def test_keyless_use_is_a_managed_key_and_revoking_it_shuts_it_off(
        keyless_gateway: Gateway) -> None:
    """The first keyless session creates the key; the operator sees it and can revoke it."""
    async with websockets.connect(f"{keyless_gateway.ws_url}/api/v1/ws") as ws:
        await ws.send(b"")  # end of stream at once: a session opened and ended cleanly
        assert await read_until_close(ws) == []
    assert ws.close_code == 1000
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    url = f"{keyless_gateway.http_url}/v1/admin/keys/{ANONYMOUS_KEY_ID}"
    async with httpx.AsyncClient(headers=admin) as http:
        record = (await http.get(url)).json()
        assert record["id"] == ANONYMOUS_KEY_ID and record["name"] == "anonymous"
        assert (await http.delete(url)).json()["revoked"] is True
    async with websockets.connect(f"{keyless_gateway.ws_url}/api/v1/ws") as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4401 and "revoked" in (ws.close_reason or "")
