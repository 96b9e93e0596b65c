"""Deepgram adapter: pure parsing on recorded-style messages, then the real protocol on a fake."""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import (
    AdapterContext,
    Finalized,
    ProviderAuthError,
    ProviderTimeout,
    ProviderUsage,
    SpeechStarted,
    StreamOptions,
    Transcript,
    UtteranceEnd,
)
from adapters.deepgram import (
    IDLE_TIMEOUT,
    KEEPALIVE_INTERVAL,
    DeepgramAdapter,
    Segmenter,
    listen_query,
    parse_results,
)
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.driver import (
    check_segments,
    error_of,
    final_text,
    finalized_after_finals,
    finals,
    run,
)
from tests.speech import BECKETT_TEXT, pcm

RESULTS = {
    "type": "Results", "channel_index": [0, 1], "duration": 1.5, "start": 0.5,
    "is_final": True, "speech_final": False,
    "channel": {"alternatives": [{
        "transcript": "Ever tried.", "confidence": 0.99, "languages": ["en"],
        "words": [
            {"word": "ever", "start": 0.6, "end": 0.9, "confidence": 0.99,
             "punctuated_word": "Ever", "speaker": 0},
            {"word": "tried", "start": 0.9, "end": 1.3, "confidence": 0.98,
             "punctuated_word": "tried.", "speaker": 1},
        ]}]},
    "metadata": {"request_id": "r", "model_info": {"name": "general-nova-3"}},
}


def adapter(fake: FakeDeepgram, key: str = "dg-test-key",
            keepalive_interval: float | None = None) -> DeepgramAdapter:
    return DeepgramAdapter(AdapterContext(api_key=key, base_url=fake.url, connect_timeout=5,
                                          flush_timeout=3, keepalive_interval=keepalive_interval))


def test_parse_results_uses_punctuated_words_in_seconds() -> None:
    piece = parse_results(RESULTS)
    assert piece.text == "Ever tried."
    assert [w.word for w in piece.words] == ["Ever", "tried."]
    assert (piece.start, piece.end) == (0.6, 1.3)
    assert piece.words[1].speaker == "1" and piece.language == "en"
    assert piece.is_final and not piece.speech_final


def test_segmenter_joins_is_final_pieces_into_one_final() -> None:
    seg = Segmenter()
    interim = parse_results({**RESULTS, "is_final": False})
    first = parse_results(RESULTS)
    last = parse_results({**RESULTS, "speech_final": True, "start": 1.5,
                          "channel": {"alternatives": [{"transcript": "Ever failed.",
                                                        "words": []}]}})
    events = seg.feed(interim) + seg.feed(first) + seg.feed(last) + seg.flush()
    kinds = [(e.segment_id, e.is_final) for e in events if isinstance(e, Transcript)]
    assert kinds == [("dg-0", False), ("dg-0", False), ("dg-0", True)]
    final = events[-1]
    assert isinstance(final, Transcript) and final.text == "Ever tried. Ever failed."
    assert seg.flush() == []  # never repeated


def test_query_maps_options() -> None:
    opts = StreamOptions(language="auto", diarization=True, custom_vocabulary=("Beckett", "x y"),
                         punctuation=False)
    q = listen_query("nova-3", opts)
    assert ("language", "multi") in q and ("diarize", "true") in q
    assert [v for k, v in q if k == "keyterm"] == ["Beckett", "x y"]
    assert ("punctuate", "false") in q
    assert [v for k, v in listen_query("nova-2", opts) if k == "keywords"] == ["Beckett", "x y"]


async def test_streams_speech_and_flushes_tail() -> None:
    async with FakeDeepgram() as fake:
        stream = adapter(fake).open_stream("nova-3", StreamOptions(diarization=True))
        events = await run(stream, pcm("beckett.wav"))
        log = await fake.wait_closed()
    assert final_text(events) == BECKETT_TEXT
    check_segments(events)
    assert any(isinstance(e, Transcript) and not e.is_final for e in events)
    assert len(finals(events)) == 6  # one per sentence, pieces joined
    assert any(isinstance(e, UtteranceEnd) for e in events)
    assert any(isinstance(e, SpeechStarted) for e in events)
    usage = [e for e in events if isinstance(e, ProviderUsage)]
    assert usage and usage[0].audio_seconds == pytest.approx(9.96, abs=0.05)
    assert log.headers["authorization"] == "Token dg-test-key"
    assert log.types()[-1] == "CloseStream" and log.close_code == 1000
    assert finals(events)[0].words[0].speaker == "0"


async def test_finalize_answers_after_its_finals() -> None:
    async with FakeDeepgram() as fake:
        stream = adapter(fake).open_stream("nova-3", StreamOptions())
        events = await run(stream, pcm("beckett.wav"), finalize_after=12)
        log = await fake.wait_closed()
    assert "Finalize" in log.types()
    index = finalized_after_finals(events)
    assert sum(isinstance(e, Finalized) for e in events) == 1
    check_segments(events)
    assert final_text(events) == BECKETT_TEXT
    assert index < len(events) - 1


async def test_keepalive_holds_a_silent_stream_open() -> None:
    # The fake closes after 1 s without data, the adapter keeps alive every 0.3 s; the
    # defaults keep the same ratio against Deepgram's real 10 s window.
    assert KEEPALIVE_INTERVAL <= IDLE_TIMEOUT / 2
    audio = pcm("beckett.wav")
    async with FakeDeepgram(idle_timeout=1.0) as fake:
        stream = adapter(fake, keepalive_interval=0.3).open_stream("nova-3", StreamOptions())
        # the client is silent for 2.5 idle windows after 1 s of audio
        await run(stream, audio, pause_after=10, pause=2.5)
        log = await fake.wait_closed()
    keepalives = [t for m, t in zip(log.messages, log.message_times, strict=True)
                  if m["type"] == "KeepAlive"]
    assert len(keepalives) >= 5
    gaps = [b - a for a, b in zip(keepalives, keepalives[1:], strict=False)]
    assert max(gaps) < 1.0
    assert log.close_code == 1000


async def test_silent_stream_without_keepalive_times_out_net_0001() -> None:
    async with FakeDeepgram(idle_timeout=0.5) as fake:
        stream = adapter(fake, keepalive_interval=5.0).open_stream("nova-3", StreamOptions())
        await stream.start()
        error = await error_of(stream, ProviderTimeout, within=5)
        await stream.aclose()
    assert error.code == "NET-0001"


async def test_wrong_key_is_an_auth_error() -> None:
    async with FakeDeepgram() as fake:
        stream = adapter(fake, key="wrong").open_stream("nova-3", StreamOptions())
        with pytest.raises(ProviderAuthError) as err:
            await stream.start()
        await stream.aclose()
    assert err.value.code == 401 and "Invalid credentials" in str(err.value)
    assert fake.sessions == []


async def test_aclose_mid_stream_closes_upstream_and_is_idempotent() -> None:
    async with FakeDeepgram() as fake:
        stream = adapter(fake).open_stream("nova-3", StreamOptions())
        await stream.start()
        await stream.send_audio(pcm("beckett.wav")[:16000])
        await stream.aclose()
        await stream.aclose()
        log = await fake.wait_closed(within=5)
    assert log.closed.is_set()


def test_catalogue_and_unconfigured() -> None:
    models = {m.model: m for m in DeepgramAdapter(AdapterContext()).models()}
    assert {"nova-3", "nova-3-medical", "nova-2", "nova-2-meeting"} <= set(models)
    assert not models["nova-3"].available
    assert "DEEPGRAM_API_KEY" in (models["nova-3"].unavailable_reason or "")
    assert models["nova-3"].capabilities.language_detection
    assert not models["nova-3-medical"].capabilities.language_detection


async def test_empty_frames_are_never_forwarded() -> None:
    # An empty binary frame would end the stream upstream (DATA-0000 on this fake).
    audio = pcm("beckett.wav")[:48000]
    async with FakeDeepgram(text="Ever tried.", speech_seconds=1.5) as fake:
        stream = adapter(fake).open_stream("nova-3", StreamOptions())
        await stream.start()
        events: list[object] = []

        async def consume() -> None:
            async for e in stream.events():
                events.append(e)

        reader = asyncio.create_task(consume())
        for chunk in (audio[:16000], b"", audio[16000:], b""):
            await stream.send_audio(chunk)
        await stream.close_stream()
        await asyncio.wait_for(reader, 10)
        await stream.aclose()
        log = await fake.wait_closed()
    assert log.frames == 2 and log.close_code == 1000
    assert " ".join(e.text for e in events if isinstance(e, Transcript) and e.is_final) == (
        "Ever tried.")
