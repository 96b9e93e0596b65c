"""OpenAI models without server VAD (gpt-live-transcribe, gpt-realtime-whisper): our VAD
commits each turn of real speech, so finals arrive per utterance while the stream is open,
timed by the VAD; finalize and the end of stream still flush the tail."""

from __future__ import annotations

import asyncio
import json

import pytest

from adapters.base import (
    AdapterContext,
    Finalized,
    ProviderProtocolError,
    SpeechStarted,
    StreamEvent,
    StreamOptions,
    Transcript,
)
from adapters.openai import OpenAIAdapter, session_update
from tests.fakes.driver import check_segments, final_text, finals, frames, run
from tests.fakes.openai import FakeOpenAI
from tests.speech import BECKETT_TEXT, pcm

AUDIO = pcm("beckett.wav")
MODELS = ["gpt-live-transcribe", "gpt-realtime-whisper"]


def adapter(fake: FakeOpenAI) -> OpenAIAdapter:
    return OpenAIAdapter(AdapterContext(api_key="sk-test-key", base_url=fake.base_url,
                                        connect_timeout=5, flush_timeout=5))


@pytest.mark.parametrize("model", MODELS)
async def test_turns_are_committed_while_the_stream_is_open(model: str) -> None:
    async with FakeOpenAI() as fake:
        oa = adapter(fake)
        assert oa.capabilities(model).input_sample_rate == 16000  # our VAD hears 16 kHz
        stream = oa.open_stream(model, StreamOptions())
        events: list[StreamEvent] = []
        two_finals = asyncio.Event()
        await stream.start()

        async def collect() -> None:
            async for event in stream.events():
                events.append(event)
                if len(finals(events)) >= 2:
                    two_finals.set()

        reader = asyncio.create_task(collect())
        try:
            for frame in frames(AUDIO):
                await stream.send_audio(frame)
            async with asyncio.timeout(15):  # finals come without any finalize or close
                await two_finals.wait()
            before_close = len(finals(events))
            await stream.close_stream()
            async with asyncio.timeout(15):
                await reader
        finally:
            await stream.aclose()
            await oa.aclose()
        log = await fake.wait_closed()
    assert before_close >= 2
    assert final_text(events) == BECKETT_TEXT
    check_segments(events)
    assert sum(isinstance(e, SpeechStarted) for e in events) >= 2
    commits = log.types().count("input_audio_buffer.commit")
    assert commits >= len(finals(events))  # one commit per turn (+ the tail's)
    spans = [(f.start, f.end) for f in finals(events)]
    assert all(a < b for a, b in spans) and spans == sorted(spans)
    assert spans[-1][1] <= len(AUDIO) / 32000 + 0.01  # VAD times, in the client's audio


@pytest.mark.parametrize("model", MODELS)
async def test_finalize_and_close_flush_the_tail(model: str) -> None:
    async with FakeOpenAI() as fake:
        oa = adapter(fake)
        try:
            events = await run(oa.open_stream(model, StreamOptions()), AUDIO, finalize_after=28)
        finally:
            await oa.aclose()
    index = next(i for i, e in enumerate(events) if isinstance(e, Finalized))
    assert any(isinstance(e, Transcript) and e.is_final for e in events[:index])
    assert final_text(events) == BECKETT_TEXT


async def test_no_server_vad_and_the_fake_refuses_it() -> None:
    from websockets.asyncio.client import connect

    for model in MODELS:
        assert session_update(model, StreamOptions())["session"]["audio"]["input"][
            "turn_detection"] is None
    async with FakeOpenAI() as fake:
        update = session_update("gpt-4o-transcribe", StreamOptions())
        update["session"]["audio"]["input"]["transcription"]["model"] = "gpt-live-transcribe"
        url = fake.base_url.replace("http", "ws", 1) + "/realtime?intent=transcription"
        async with connect(url, additional_headers={"Authorization": "Bearer sk-test-key"}) as ws:
            await ws.recv()  # session.created
            await ws.send(json.dumps(update))
            answer = json.loads(await ws.recv())
        assert answer["type"] == "error"
        assert answer["error"]["param"] == "session.audio.input.turn_detection"
        oa = adapter(fake)
        try:
            stream = oa.open_stream("gpt-live-transcribe", StreamOptions(sample_rate=24000))
            with pytest.raises(ProviderProtocolError, match="16000 Hz"):
                await stream.start()
            await stream.aclose()
        finally:
            await oa.aclose()
