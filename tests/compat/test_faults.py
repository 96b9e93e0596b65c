"""Faults on the compatible endpoints: the provider dropping the stream mid-way, a client
leaving abruptly. What the client receives, and what the gateway and the provider still hold."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator

import pytest
import websockets

from tests.compat.conftest import no_sessions_left, read_until_closed
from tests.fakes.providers import Upstream, upstream
from tests.servers import Gateway, running_gateway
from tests.speech import pcm

AUDIO = pcm("beckett.wav")


@pytest.fixture(scope="module")
async def dropping() -> AsyncIterator[Upstream]:
    async with upstream("deepgram", fault="drop") as up:
        yield up


@pytest.fixture(scope="module")
def drop_gateway(dropping: Upstream) -> Iterator[Gateway]:
    with running_gateway(provider_connect_timeout=5.0, provider_flush_timeout=5.0,
                         **dropping.settings()) as gw:
        yield gw


async def test_provider_drop_is_an_error_then_a_close(drop_gateway: Gateway,
                                                      dropping: Upstream) -> None:
    url = f"{drop_gateway.ws_url}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000" \
          "&interim_results=true"
    async with websockets.connect(url, additional_headers={
            "Authorization": f"Token {drop_gateway.dev_key}"}) as ws:
        async def send() -> None:
            for i in range(0, len(AUDIO), 3200):
                await ws.send(AUDIO[i:i + 3200])
                await asyncio.sleep(0.01)

        sender = asyncio.create_task(send())
        messages = await read_until_closed(ws)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    # the fake drops with Deepgram's NET-0000 (nothing sent in time): upstream timed out
    assert ws.close_code == 4504, (ws.close_code, ws.close_reason)
    error = messages[-1]
    assert error["type"] == "Error" and error["variant"] == "upstream_timeout"
    assert "deepgram" in error["description"] and "NET-0000" in error["description"]
    assert any(m["type"] == "Results" for m in messages)  # what came before the drop arrived
    assert "dg-test-key" not in json.dumps(messages) + (ws.close_reason or "")
    await no_sessions_left(drop_gateway)
    async with asyncio.timeout(10):
        await dropping.sessions_closed()


@pytest.mark.parametrize("endpoint", ["listen", "realtime"])
async def test_client_leaving_mid_stream_frees_the_session(compat_gateway: Gateway,
                                                           endpoint: str) -> None:
    auth = {"Authorization": f"Bearer {compat_gateway.dev_key}"}
    if endpoint == "listen":
        url = f"{compat_gateway.ws_url}/v1/listen?model=local.tiny.en&encoding=linear16" \
              "&sample_rate=16000"
        frames = [AUDIO[i:i + 3200] for i in range(0, len(AUDIO) // 2, 3200)]
    else:
        url = f"{compat_gateway.ws_url}/v1/realtime?intent=transcription"
        audio = pcm("beckett.wav", 24000)
        frames = [json.dumps({"type": "input_audio_buffer.append",
                              "audio": base64.b64encode(audio[i:i + 4800]).decode()})
                  for i in range(0, len(audio) // 2, 4800)]
    ws = await websockets.connect(url, additional_headers=auth)
    for frame in frames:
        await ws.send(frame)
    await asyncio.sleep(0.5)
    ws.transport.abort()  # no close frame: the connection just goes away
    await no_sessions_left(compat_gateway)


async def test_oversized_append_is_refused(compat_gateway: Gateway) -> None:
    url = f"{compat_gateway.ws_url}/v1/realtime?intent=transcription"
    async with websockets.connect(url, max_size=None, additional_headers={
            "Authorization": f"Bearer {compat_gateway.dev_key}"}) as ws:
        await ws.recv()  # session.created
        big = base64.b64encode(bytes(1024 * 1024)).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": big}))
        await read_until_closed(ws)
    assert ws.close_code == 1009
    await no_sessions_left(compat_gateway)



def test_committed_items_fail_when_the_session_fails() -> None:
    """A committed item still waiting for its text gets ``…transcription.failed`` (the
    connection then sends the error event and closes), once."""
    from adapters import base as ab
    from app.frontends.realtime_items import ItemTracker

    tracker = ItemTracker(server_vad=False)
    tracker.on_event(ab.Transcript("s1", False, "Ever tried", 0.1, 0.9))
    committed = tracker.commit(1.0)[0]
    tracker.on_event(ab.Transcript("s2", False, "Ever failed", 1.2, 1.9))  # before Finalized
    failed = tracker.fail("upstream_timeout", "deepgram timed out")
    assert [f["item_id"] for f in failed] == [committed["item_id"]]
    assert failed[0]["type"] == "conversation.item.input_audio_transcription.failed"
    assert failed[0]["error"]["message"] == "deepgram timed out"
    assert tracker.fail("x", "y") == []  # once
