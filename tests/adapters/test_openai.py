"""OpenAI adapter: Realtime transcription (24 kHz) and whisper-1 over REST, on a fake."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect

from adapters.base import (
    AdapterContext,
    Finalized,
    ProviderAuthError,
    ProviderUsage,
    SpeechStarted,
    StreamOptions,
    Transcript,
)
from adapters.openai import OpenAIAdapter, session_update
from tests.fakes.driver import check_segments, final_text, finalized_after_finals, finals, run
from tests.fakes.openai import FakeOpenAI
from tests.speech import BECKETT_TEXT, pcm


def adapter(fake: FakeOpenAI, key: str = "sk-test-key") -> OpenAIAdapter:
    return OpenAIAdapter(AdapterContext(api_key=key, base_url=fake.base_url, connect_timeout=5,
                                        flush_timeout=5))


def test_session_update_is_24khz_transcription() -> None:
    opts = StreamOptions(language="auto", initial_prompt="Beckett.",
                         custom_vocabulary=("Worstward",))
    update = session_update("gpt-4o-transcribe", opts)
    audio_in = update["session"]["audio"]["input"]
    assert update["session"]["type"] == "transcription"
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_in["transcription"] == {"model": "gpt-4o-transcribe",
                                         "prompt": "Beckett. Worstward."}
    assert audio_in["turn_detection"]["type"] == "server_vad"
    assert session_update("gpt-realtime-whisper", opts)["session"]["audio"]["input"][
        "turn_detection"] is None


async def test_realtime_streams_24khz_audio() -> None:
    async with FakeOpenAI() as fake:
        oa = adapter(fake)
        stream = oa.open_stream("gpt-4o-transcribe", StreamOptions(sample_rate=24000))
        events = await run(stream, pcm("beckett.wav", 24000), rate=24000)
        log = await fake.wait_closed()
    assert final_text(events) == BECKETT_TEXT
    assert len(finals(events)) == 6
    check_segments(events)
    assert any(isinstance(e, Transcript) and not e.is_final for e in events)
    assert any(isinstance(e, SpeechStarted) for e in events)
    assert any(isinstance(e, ProviderUsage) for e in events)
    assert log.headers["authorization"] == "Bearer sk-test-key"
    assert log.query["intent"] == ["transcription"]
    assert log.types()[0] == "session.update"


async def test_realtime_resamples_16khz_input() -> None:
    async with FakeOpenAI() as fake:
        stream = adapter(fake).open_stream("gpt-4o-mini-transcribe", StreamOptions())
        events = await run(stream, pcm("beckett.wav"))
    assert final_text(events) == BECKETT_TEXT
    check_segments(events)


async def test_finalize_commits_then_acknowledges() -> None:
    async with FakeOpenAI() as fake:
        stream = adapter(fake).open_stream("gpt-4o-transcribe", StreamOptions(sample_rate=24000))
        events = await run(stream, pcm("beckett.wav", 24000), rate=24000, finalize_after=22)
        log = await fake.wait_closed()
    assert "input_audio_buffer.commit" in log.types()
    finalized_after_finals(events)
    assert sum(isinstance(e, Finalized) for e in events) == 1
    assert final_text(events) == BECKETT_TEXT
    check_segments(events)


async def test_fake_refuses_audio_that_is_not_24khz() -> None:
    async with FakeOpenAI() as fake:
        url = fake.base_url.replace("http", "ws") + "/realtime?intent=transcription"
        async with connect(url, additional_headers={"Authorization": "Bearer sk-test-key"}) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            update = session_update("gpt-4o-transcribe", StreamOptions())
            update["session"]["audio"]["input"]["format"]["rate"] = 16000
            await ws.send(json.dumps(update))
            error = json.loads(await ws.recv())
    assert error["type"] == "error" and "24kHz" in error["error"]["message"]


async def test_wrong_key_is_an_auth_error() -> None:
    async with FakeOpenAI() as fake:
        stream = adapter(fake, key="sk-wrong").open_stream("gpt-4o-transcribe", StreamOptions())
        with pytest.raises(ProviderAuthError) as err:
            await stream.start()
        await stream.aclose()
    assert err.value.code == 401 and "Incorrect API key" in str(err.value)


async def test_whisper_1_is_segmented_over_rest() -> None:
    async with FakeOpenAI() as fake:
        oa = adapter(fake)
        events = await run(oa.open_stream("whisper-1", StreamOptions()), pcm("beckett.wav"))
        await oa.aclose()
    assert final_text(events) == BECKETT_TEXT
    assert fake.rest.requests[0].fields["model"] == ["whisper-1"]
    assert not any(isinstance(e, Transcript) and not e.is_final for e in events)
    check_segments(events)
