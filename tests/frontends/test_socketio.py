"""Socket.IO at ``/api/stt-realtime-socket`` with python-socketio's own AsyncClient.

Follows https://docs.cantonese.ai/speech-to-text-realtime step by step: connect with
``x-api-key`` in the headers, ``start-session {sampleRate}``, wait for ``session-started``,
``audio-chunk {audio_base_64, sample_rate}``, ``stop-session``, then ``session-closed``.
(The npm ``socket.io-client`` run by node does the same in ``tests/frontends/test_node_client.py``.)
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
import socketio

from tests.servers import Gateway
from tests.speech import BECKETT_TEXT, pcm, wer

MAX_WER = 0.25
PATH = "/api/stt-realtime-socket"
EVENTS = ("session-started", "transcript-message", "session-error", "session-closed")


class Recorder:
    """A socket.io client that records every server event in order."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.seen: list[tuple[str, Any]] = []
        for name in EVENTS:
            self.sio.on(name, self._handler(name))

    def _handler(self, name: str) -> Any:
        async def handle(data: Any = None) -> None:
            self.seen.append((name, data))
            await self.events.put((name, data))
        return handle

    async def next(self, name: str, wait: float = 60) -> Any:
        async with asyncio.timeout(wait):
            while True:
                got, data = await self.events.get()
                if got == name:
                    return data

    def transcripts(self, message_type: str) -> list[dict[str, Any]]:
        return [d for n, d in self.seen
                if n == "transcript-message" and d["message_type"] == message_type]


async def connect(gateway: Gateway, key: str | None = None) -> Recorder:
    client = Recorder()
    await client.sio.connect(gateway.http_url, socketio_path=PATH,
                             headers={"x-api-key": key or gateway.dev_key})
    return client


async def test_realtime_session_gives_all_four_message_types(gateway: Gateway) -> None:
    client = await connect(gateway)
    try:
        await client.sio.emit("start-session", {"sampleRate": 16000})
        await client.next("session-started")
        speech = pcm("beckett.wav")
        step = 3200  # 100 ms chunks, sent at twice real time
        for i in range(0, len(speech), step):
            await client.sio.emit("audio-chunk", {
                "audio_base_64": base64.b64encode(speech[i:i + step]).decode(),
                "sample_rate": 16000})
            await asyncio.sleep(0.05)
        await client.sio.emit("stop-session")
        closed = await client.next("session-closed")
    finally:
        await client.sio.disconnect()
    assert closed == {"code": 1000, "reason": "session ended"}
    started = client.transcripts("session_started")
    assert len(started) == 1 and started[0]["session_id"].startswith("sess_")
    assert started[0]["config"]["sample_rate"] == 16000
    assert client.transcripts("partial_transcript")
    committed = client.transcripts("committed_transcript")
    timed = client.transcripts("committed_transcript_with_timestamps")
    assert [c["text"] for c in committed] == [t["text"] for t in timed]
    assert wer(BECKETT_TEXT, " ".join(c["text"] for c in committed)) <= MAX_WER, committed
    words = [w for t in timed for w in t["words"]]
    assert words and all(w["type"] == "word" and 0 <= w["start"] <= w["end"] for w in words)
    assert not [n for n, _ in client.seen if n == "session-error"]


async def test_bad_key_gets_connect_error_with_401(gateway: Gateway) -> None:
    client = Recorder()
    refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    client.sio.on("connect_error", lambda data: refused.set_result(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.sio.connect(gateway.http_url, socketio_path=PATH,
                                 headers={"x-api-key": "sg_wrong"})
    data = await asyncio.wait_for(refused, 10)
    assert data["message"] == "invalid API key"
    assert data["data"]["status"] == 401 and data["data"]["code"] == 4401, data


async def test_protocol_misuse_is_reported_and_the_socket_goes_on(gateway: Gateway) -> None:
    client = await connect(gateway)
    try:
        await client.sio.emit("audio-chunk", {"audio_base_64": "AAAA", "sample_rate": 16000})
        assert "start-session" in (await client.next("session-error"))["error"]
        await client.sio.emit("start-session", {"sampleRate": 16000, "model": "nosuch.model"})
        error = await client.next("session-error")
        assert error["code"] == 4404
        assert (await client.next("session-closed"))["code"] == 4404
        await client.sio.emit("start-session", {"sampleRate": 16000})
        await client.next("session-started")
        await client.sio.emit("audio-chunk", {"audio_base_64": "AAAA", "sample_rate": 8000})
        assert "sample_rate 8000" in (await client.next("session-error"))["error"]
        # Nothing sent for longer than idle_timeout (3 s): the session ends with 4408.
        closed = await client.next("session-closed", wait=20)
        assert closed["code"] == 4408 and "idle" in closed["reason"]
    finally:
        await client.sio.disconnect()


async def test_browser_style_auth_payload_and_a_second_session(gateway: Gateway) -> None:
    """Browsers cannot set headers on a WebSocket: the key may come in the auth payload."""
    client = Recorder()
    await client.sio.connect(gateway.http_url, socketio_path=PATH,
                             auth={"apiKey": gateway.dev_key}, transports=["websocket"])
    try:
        for _ in range(2):  # one socket, two sessions one after the other
            await client.sio.emit("start-session", {"sampleRate": 48000})
            await client.next("session-started")
            await client.sio.emit("audio-chunk", {
                "audio_base_64": base64.b64encode(bytes(9600)).decode(), "sample_rate": 48000})
            await client.sio.emit("stop-session")
            assert (await client.next("session-closed"))["code"] == 1000
    finally:
        await client.sio.disconnect()
    assert len(client.transcripts("session_started")) == 2
