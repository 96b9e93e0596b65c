"""Gladia adapter: session POST, then the returned WebSocket, on a strict fake."""

from __future__ import annotations

import pytest

from adapters.base import (
    AdapterContext,
    Finalized,
    ProviderAuthError,
    ProviderUsage,
    StreamOptions,
    Transcript,
)
from adapters.gladia import FINALIZE_SILENCE, GladiaAdapter, init_body, parse_transcript
from tests.fakes.driver import check_segments, final_text, finalized_after_finals, finals, run
from tests.fakes.gladia import FakeGladia, validate
from tests.speech import BECKETT_TEXT, pcm

MESSAGE = {"session_id": "s", "created_at": "2026-01-01T00:00:00Z", "type": "transcript",
           "data": {"id": "u1", "is_final": True, "utterance": {
               "text": " Ever tried.", "start": 0.3, "end": 1.1, "language": "en",
               "channel": 0, "confidence": 0.9,
               "words": [{"word": " Ever", "start": 0.3, "end": 0.6, "confidence": 0.9},
                         {"word": " tried.", "start": 0.6, "end": 1.1, "confidence": 0.8}]}}}


def adapter(fake: FakeGladia, key: str = "gladia-test-key") -> GladiaAdapter:
    return GladiaAdapter(AdapterContext(api_key=key, base_url=fake.http_url, connect_timeout=5,
                                        flush_timeout=5))


def test_parse_transcript() -> None:
    t = parse_transcript(MESSAGE)
    assert (t.segment_id, t.is_final, t.text) == ("u1", True, "Ever tried.")
    assert [w.word for w in t.words] == ["Ever", "tried."] and t.language == "en"


def test_init_body_is_valid_for_every_option() -> None:
    for opts in (StreamOptions(), StreamOptions(language="auto", custom_vocabulary=("Beckett",)),
                 StreamOptions(language="fr", interim_results=False)):
        body = init_body("solaria-1", opts)
        assert validate(body) == [], body
    assert validate({**init_body("solaria-1", StreamOptions()), "diarization": True})


async def test_streams_and_ends_session() -> None:
    async with FakeGladia() as fake:
        gl = adapter(fake)
        events = await run(gl.open_stream("solaria-1", StreamOptions()), pcm("beckett.wav"))
        log = await fake.wait_closed()
        await gl.aclose()
    assert final_text(events) == BECKETT_TEXT and len(finals(events)) == 6
    check_segments(events)
    assert any(isinstance(e, Transcript) and not e.is_final for e in events)
    usage = [e for e in events if isinstance(e, ProviderUsage)]
    assert usage and usage[0].audio_seconds == pytest.approx(9.96, abs=0.05)
    assert [m["type"] for m in log.messages] == ["stop_recording"]
    assert fake.bodies[0]["sample_rate"] == 16000


async def test_finalize_by_endpointing_keeps_stream_time() -> None:
    audio = pcm("beckett.wav")
    async with FakeGladia() as fake:
        gl = adapter(fake)
        events = await run(gl.open_stream("solaria-1", StreamOptions()), audio,
                           finalize_after=22)
        log = await fake.wait_closed()
        await gl.aclose()
    finalized_after_finals(events)
    assert sum(isinstance(e, Finalized) for e in events) == 1
    assert final_text(events) == BECKETT_TEXT
    check_segments(events)
    # The injected silence is not in our timeline: the last word ends within the audio sent.
    assert log.audio_bytes == len(audio) + int(FINALIZE_SILENCE * 32000) // 2 * 2
    assert finals(events)[-1].end <= len(audio) / 32000 + 0.01


async def test_wrong_key_fails_the_session_post() -> None:
    async with FakeGladia() as fake:
        gl = adapter(fake, key="nope")
        stream = gl.open_stream("solaria-1", StreamOptions())
        with pytest.raises(ProviderAuthError) as err:
            await stream.start()
        await stream.aclose()
        await gl.aclose()
    assert err.value.code == 401 and fake.sessions == []
