"""Our WebSocket keepalive never kills a client we are slowing down (issue 9 item 2), and
still closes one that stopped answering.

AssemblyAI takes audio no faster than real time, so the gateway stops reading a client that
sends faster (backpressure); that client's pongs sit unread behind its audio. The gateway's
ping deadline only runs while it reads (`app.protocols.GatewayWebSocketProtocol`). Here the
intervals are shortened (ping every 1 s, 1 s to answer): over three minutes of audio, the
client is paused for minutes, hundreds of times the ping timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets

from tests.fakes.providers import Upstream, upstream
from tests.logcheck import captured_logs
from tests.servers import Gateway, running_gateway, sessions_gone
from tests.speech import BECKETT_TEXT, normalize, pcm

BECKETT = pcm("beckett.wav")
REPEAT = 19  # 19 x 10 s: over three minutes of audio
MODEL = "assemblyai.universal-streaming-english"


@pytest.fixture(scope="module")
async def assemblyai() -> AsyncIterator[Upstream]:
    text = " ".join([BECKETT_TEXT] * REPEAT)
    async with upstream("assemblyai", text=text,
                        speech_seconds=REPEAT * len(BECKETT) / 32000) as up:
        yield up


@pytest.fixture(scope="module")
def served(assemblyai: Upstream) -> Iterator[Gateway]:
    with running_gateway(default_model=MODEL, ws_ping_interval=1.0, ws_ping_timeout=1.0,
                         idle_timeout=60.0, provider_flush_timeout=15.0,
                         **assemblyai.settings()) as gw:
        yield gw


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_client_paused_for_minutes_is_not_closed_by_keepalive(
        served: Gateway, assemblyai: Upstream) -> None:
    audio = BECKETT * REPEAT
    url = f"{served.ws_url}/v1/transcribe?output_format=json&api_key={served.dev_key}"
    finals: list[str] = []
    with captured_logs() as logs:
        # The client's own pings would wait behind its audio just the same: it sends none.
        async with websockets.connect(url, ping_interval=None, max_size=None) as ws:
            async def send() -> None:
                for i in range(0, len(audio), 3200):
                    await ws.send(audio[i:i + 3200])  # as fast as the gateway reads
                await ws.send(json.dumps({"type": "close_stream"}))

            sender = asyncio.create_task(send())
            async for raw in ws:
                message = json.loads(raw)
                if message.get("is_final"):
                    finals.append(message["text"])
            await sender
        assert ws.close_code == 1000, (ws.close_code, ws.close_reason)
        await sessions_gone(served)
    assert normalize(" ".join(finals)) == normalize(" ".join([BECKETT_TEXT] * REPEAT))
    assert not any("keepalive" in failure for failure in logs.failures())
    async with asyncio.timeout(15):
        await assemblyai.sessions_closed()


async def test_client_that_stops_answering_is_closed_by_keepalive(served: Gateway) -> None:
    """A raw client that completes the handshake, then neither reads nor sends: no pong, and
    we are reading (nothing is paused), so the keepalive closes it 1011."""
    reader, writer = await asyncio.open_connection(served.host, served.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /v1/transcribe?api_key={served.dev_key} HTTP/1.1\r\n"
                  f"Host: {served.host}:{served.port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
        assert head.startswith(b"HTTP/1.1 101")
        await asyncio.sleep(3)  # ping at 1 s, unanswered at 2 s
        data = b""
        async with asyncio.timeout(15):  # the server must close
            while chunk := await reader.read(65536):
                data += chunk
    finally:
        writer.close()
    frames = _frames(data)
    assert frames and frames[0][0] == 0x9, frames  # a ping
    opcode, payload = frames[-1]
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1011
    assert b"keepalive" in payload
    await sessions_gone(served)


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """Unmasked server frames: (opcode, payload)."""
    out = []
    while len(data) >= 2:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, offset = int.from_bytes(data[2:10], "big"), 10
        out.append((opcode, data[offset:offset + length]))
        data = data[offset + length:]
    return out


@pytest.mark.parametrize("path", ["/v1/transcribe?output_format=json", "/v2/speech/stt",
                                  "/api/v1/ws?mode=stream"])
async def test_client_whose_audio_we_are_still_forwarding_is_not_idle(
        assemblyai: Upstream, path: str) -> None:
    """Frames of 3 s to a provider paced to real time, idle_timeout 1 s: each frame takes
    the gateway ~3 s to forward, during which it reads nothing from the client. That client
    is busy, not idle: no 4408."""
    audio = BECKETT
    frame = 3 * 32000
    with running_gateway(default_model=MODEL, idle_timeout=1.0, auth_timeout=5.0,
                         **assemblyai.settings()) as gw:
        url = f"{gw.ws_url}{path}"
        async with websockets.connect(url, ping_interval=None, max_size=None,
                                      additional_headers={"x-api-key": gw.dev_key}) as ws:
            if path.startswith("/v2"):
                await ws.send(json.dumps({"model": "stt-general-online"}))
            for i in range(0, len(audio), frame):
                await ws.send(audio[i:i + frame])
            await ws.send(json.dumps({"type": "close_stream"}) if path.startswith("/v1")
                          else b"")
            async for _ in ws:
                pass
        assert (ws.close_code, ws.close_reason) == (1000, "session ended")
        await sessions_gone(gw)


async def _socketio_session(gw: Gateway, client: Any, closed: asyncio.Future[Any],
                            audio: bytes, frame: int, *, within: float) -> Any:
    """Over `client` (Socket.IO): start a session, send `audio` in `frame`-byte audio-chunk
    events, stop it, and return what `closed` receives (within `within` s)."""
    await client.connect(gw.http_url, socketio_path="/api/stt-realtime-socket",
                         headers={"x-api-key": gw.dev_key}, transports=["websocket"])
    try:
        await client.emit("start-session", {"sampleRate": 16000})
        for i in range(0, len(audio), frame):
            await client.emit("audio-chunk", {
                "audio_base_64": base64.b64encode(audio[i:i + frame]).decode(),
                "sample_rate": 16000})
        await client.emit("stop-session")
        async with asyncio.timeout(within):
            return await closed
    finally:
        await client.disconnect()


async def test_socketio_client_paused_is_not_closed_by_engineio_ping(
        assemblyai: Upstream) -> None:
    """The same over Socket.IO: engine.io pings in-band, and the pong waits behind the
    audio-chunk events the gateway is not reading yet (ping every 1 s, 1 s to answer)."""
    import socketio

    audio = BECKETT * 2
    closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    client = socketio.AsyncClient(reconnection=False)
    client.on("session-closed", lambda data: closed.set_result(data))
    client.on("disconnect", lambda *_: closed.done() or closed.set_result("disconnected"))
    with running_gateway(default_model=MODEL, ws_ping_interval=1.0, ws_ping_timeout=1.0,
                         **assemblyai.settings()) as gw:
        # audio chunks as fast as the gateway reads
        result = await _socketio_session(gw, client, closed, audio, 3200, within=120)
        await sessions_gone(gw)
    assert result == {"code": 1000, "reason": "session ended"}


async def test_socketio_client_whose_audio_we_are_forwarding_is_not_idle(
        assemblyai: Upstream) -> None:
    """Audio chunks of 3 s over Socket.IO to a real-time-paced model, idle_timeout 1 s."""
    import socketio

    closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    client = socketio.AsyncClient(reconnection=False)
    client.on("session-closed", lambda data: closed.set_result(data))
    frame = 3 * 32000
    with running_gateway(default_model=MODEL, idle_timeout=1.0,
                         **assemblyai.settings()) as gw:
        result = await _socketio_session(gw, client, closed, BECKETT, frame, within=60)
        await sessions_gone(gw)
    assert result == {"code": 1000, "reason": "session ended"}
