"""The official ``openai`` realtime client (``openai[realtime]``), unchanged but for its base
URL and key, against ``/v1/realtime?intent=transcription`` on a real gateway running the local
engine on real speech: server VAD and manual commit; the deltas of every item concatenate to
its completed text (append-only: nothing repeated, nothing taken back), the last words present."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import defaultdict
from typing import Any

import numpy as np
import websockets
from openai import AsyncOpenAI

from app.frontends.g711 import ULAW
from app.frontends.g711 import decode as g711_decode
from tests.compat.conftest import no_sessions_left, read_until_closed, refused_handshake
from tests.servers import Gateway
from tests.speech import BECKETT_TEXT, normalize, pcm, wer

AUDIO_24K = pcm("beckett.wav", 24000)
SILENCE_24K = bytes(24000 * 2)  # 1 s


def client(gw: Gateway, key: str | None = None) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key or gw.dev_key, base_url=f"{gw.http_url}/v1")


class Transcripts:
    """Events of a connection, keyed by item."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.deltas: dict[str, list[str]] = defaultdict(list)
        self.completed: dict[str, str] = {}
        self.committed: list[Any] = []

    def add(self, event: Any) -> None:
        self.events.append(event)
        if event.type == "conversation.item.input_audio_transcription.delta":
            assert event.item_id not in self.completed, "delta after completed"
            self.deltas[event.item_id].append(event.delta)
        elif event.type == "conversation.item.input_audio_transcription.completed":
            assert event.item_id not in self.completed, "completed twice"
            self.completed[event.item_id] = event.transcript
        elif event.type == "input_audio_buffer.committed":
            self.committed.append(event)

    def text(self) -> str:
        return " ".join(self.completed[c.item_id] for c in self.committed
                        if c.item_id in self.completed)

    def check_append_only(self) -> None:
        for item_id, transcript in self.completed.items():
            assert "".join(self.deltas[item_id]) == transcript, (self.deltas[item_id],
                                                                 transcript)
        previous = None
        for c in self.committed:  # items chain in commit order
            assert c.previous_item_id == previous
            previous = c.item_id


async def run(gw: Gateway, session: dict[str, Any], audio: bytes, *,
              chunk: int = 4800, commits: int = 1, pace: float = 0.0) -> Transcripts:
    """Send session.update, the audio in `chunk`-byte appends, then commit; read until
    every committed item is completed."""
    got = Transcripts()
    async with client(gw).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        first = await conn.recv()
        assert first.type == "session.created"
        await conn.session.update(session=session)  # type: ignore[arg-type]
        for i in range(0, len(audio), chunk):
            await conn.input_audio_buffer.append(
                audio=base64.b64encode(audio[i:i + chunk]).decode())
            if pace:
                await asyncio.sleep(pace)
        await conn.input_audio_buffer.commit()
        async with asyncio.timeout(90):
            async for event in conn:
                assert event.type != "error", event
                got.add(event)
                # the client's own commit is the committed item without a speech_stopped
                stopped = {e.item_id for e in got.events
                           if e.type == "input_audio_buffer.speech_stopped"}
                manual = [c for c in got.committed if c.item_id not in stopped]
                if len(manual) >= commits and all(
                        c.item_id in got.completed for c in got.committed):
                    break
    updated = [e for e in got.events if e.type == "session.updated"]
    assert updated, "session.update is answered by session.updated"
    return got


def transcription_session(turn_detection: dict[str, Any] | None,
                          fmt: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "transcription", "audio": {"input": {
        "format": fmt or {"type": "audio/pcm", "rate": 24000},
        "transcription": {"model": "local.tiny.en", "language": "en"},
        "turn_detection": turn_detection, "noise_reduction": {"type": "near_field"}}}}


async def test_server_vad_items_are_append_only(compat_gateway: Gateway) -> None:
    got = await run(compat_gateway, transcription_session({"type": "server_vad"}),
                    AUDIO_24K + SILENCE_24K, pace=0.1)  # real time: 100 ms every 100 ms
    got.check_append_only()
    assert len(got.committed) >= 2, "server VAD splits the reading into several items"
    started = [e for e in got.events if e.type == "input_audio_buffer.speech_started"]
    assert started and all(e.item_id for e in started)
    text = got.text()
    assert wer(BECKETT_TEXT, text) <= 0.2, text
    assert normalize(text)[-2:] == ["fail", "better"]
    assert set(got.deltas) <= set(got.completed)  # no delta for an item never completed
    await no_sessions_left(compat_gateway)


async def test_manual_commit_one_item(compat_gateway: Gateway) -> None:
    got = await run(compat_gateway, transcription_session(None), AUDIO_24K)
    got.check_append_only()
    assert len(got.committed) == 1 and got.committed[0].previous_item_id is None
    text = got.text()
    assert wer(BECKETT_TEXT, text) <= 0.2, text
    assert normalize(text)[-2:] == ["fail", "better"]


def ulaw_encode(samples: np.ndarray) -> bytes:
    order = np.argsort(ULAW)
    values = ULAW[order].astype(np.int32)
    idx = np.clip(np.searchsorted(values, samples.astype(np.int32)), 1, 255)
    nearer = np.where(np.abs(values[idx - 1] - samples) <= np.abs(values[idx] - samples),
                      idx - 1, idx)
    return order[nearer].astype(np.uint8).tobytes()


async def test_pcmu_input(compat_gateway: Gateway) -> None:
    samples = np.frombuffer(pcm("beckett.wav", 8000), dtype="<i2")
    got = await run(compat_gateway, transcription_session(None, {"type": "audio/pcmu"}),
                    ulaw_encode(samples), chunk=1600)
    got.check_append_only()
    # G.711 decodes faithfully (the codec's own ~38 dB SNR on speech) ...
    decoded = np.frombuffer(g711_decode(ulaw_encode(samples), "pcmu"), dtype="<i2")
    noise = decoded.astype(np.float64) - samples
    assert 10 * np.log10(np.mean(samples.astype(np.float64) ** 2) / np.mean(noise ** 2)) > 30
    # ... but 8 kHz telephone audio costs tiny.en a word or two of this reading ("Fail
    # better" heard as "They all better"): the bound is one word looser than wide-band.
    assert wer(BECKETT_TEXT, got.text()) <= 0.25, got.text()


async def test_errors_are_error_events_and_the_session_goes_on(compat_gateway: Gateway) -> None:
    async with client(compat_gateway).realtime.connect(
            extra_query={"intent": "transcription"}) as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session=transcription_session(  # type: ignore[arg-type]
            None) | {"audio": {"input": {"transcription": {"model": "nosuch.model"}}}})
        error = await conn.recv()
        assert error.type == "error" and "nosuch" in error.error.message
        assert error.error.param == "session.audio.input.transcription.model"
        await conn.input_audio_buffer.commit()
        error = await conn.recv()
        assert error.type == "error" and error.error.code == "input_audio_buffer_commit_empty"
        await conn.send({"type": "response.create"})
        error = await conn.recv()
        assert error.type == "error" and "response.create" in error.error.message
        await conn.session.update(session=transcription_session(None))  # type: ignore[arg-type]
        assert (await conn.recv()).type == "session.updated"


async def test_wrong_key_refused_and_browser_subprotocols(compat_gateway: Gateway) -> None:
    url = f"{compat_gateway.ws_url}/v1/realtime?intent=transcription"
    response = await refused_handshake(url, "Bearer sg_wrong")
    assert response.status_code == 401
    body = json.loads(response.body or b"{}")
    assert body["error"]["code"] == "invalid_api_key"
    async with websockets.connect(url, subprotocols=[  # type: ignore[list-item]
            "realtime", f"openai-insecure-api-key.{compat_gateway.dev_key}"]) as ws:
        assert ws.subprotocol == "realtime"
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        assert created["session"]["type"] == "transcription"


async def test_idle_session_ends_with_an_error_event(compat_gateway: Gateway) -> None:
    url = f"{compat_gateway.ws_url}/v1/realtime?intent=transcription"
    async with websockets.connect(url, additional_headers={
            "Authorization": f"Bearer {compat_gateway.dev_key}"}) as ws:
        await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(AUDIO_24K[:4800]).decode()}))
        messages = await read_until_closed(ws)
    assert ws.close_code == 4408
    assert messages[-1]["type"] == "error" and "idle" in messages[-1]["error"]["message"]
    await no_sessions_left(compat_gateway)


async def test_openai_model_name_through_the_fake(compat_gateway: Gateway) -> None:
    """``gpt-4o-transcribe`` means ``openai.gpt-4o-transcribe``: the gateway's OpenAI adapter
    relays to the OpenAI fake, and its results come back in OpenAI's own shape."""
    session = transcription_session(None)
    session["audio"]["input"]["transcription"]["model"] = "gpt-4o-transcribe"
    got = await run(compat_gateway, session, AUDIO_24K + SILENCE_24K)
    got.check_append_only()
    updated = [e for e in got.events if e.type == "session.updated"][-1]
    assert updated.session.audio.input.transcription.model == "gpt-4o-transcribe"
    assert normalize(got.text()) == normalize(BECKETT_TEXT)


def test_beta_transcription_session_fields_map_to_ga() -> None:
    from app.frontends.openai_realtime import beta_to_ga

    ga = beta_to_ga({"input_audio_format": "g711_ulaw",
                     "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                     "turn_detection": None})
    assert ga == {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"},
        "transcription": {"model": "whisper-1", "language": "en"}, "turn_detection": None}}}
