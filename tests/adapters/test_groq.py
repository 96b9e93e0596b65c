"""Groq adapter: VAD-segmented utterances POSTed as WAV to a fake of Groq's REST API."""

from __future__ import annotations

import pytest

from adapters._segmented import parse_verbose_json, prompt_for, transcription_form
from adapters.base import (
    AdapterContext,
    Finalized,
    ProviderAuthError,
    ProviderUsage,
    SpeechStarted,
    StreamOptions,
    Transcript,
    UtteranceEnd,
)
from adapters.groq import GroqAdapter
from tests.fakes.driver import check_segments, final_text, finalized_after_finals, finals, run
from tests.fakes.groq import FakeGroq
from tests.speech import BECKETT_TEXT, pcm

VERBOSE = {"task": "transcribe", "language": "english", "duration": 1.2, "text": " Ever tried.",
           "segments": [{"id": 0, "start": 0.0, "end": 1.2, "text": " Ever tried.",
                         "avg_logprob": -0.1}],
           "words": [{"word": "Ever", "start": 0.2, "end": 0.5},
                     {"word": "tried.", "start": 0.5, "end": 0.9}],
           "x_groq": {"id": "req_1"}}


def adapter(fake: FakeGroq, key: str = "gsk_test_key") -> GroqAdapter:
    return GroqAdapter(AdapterContext(api_key=key, base_url=fake.base_url, connect_timeout=5,
                                      flush_timeout=5))


def test_parse_verbose_json_shifts_words_to_stream_time() -> None:
    t = parse_verbose_json(VERBOSE, segment_id="groq-3", offset=10.0)
    assert t.is_final and t.text == "Ever tried." and t.language == "en"
    assert [(w.word, w.start, w.end) for w in t.words] == [("Ever", 10.2, 10.5),
                                                           ("tried.", 10.5, 10.9)]
    assert (t.start, t.end) == (10.2, 10.9)
    assert t.confidence == pytest.approx(0.905, abs=0.001)


def test_form_maps_options() -> None:
    opts = StreamOptions(language="auto", initial_prompt="Samuel Beckett.", temperature=0.2,
                         custom_vocabulary=("Worstward", "Ho"))
    form = transcription_form("whisper-large-v3", opts)
    assert ("response_format", "verbose_json") in form
    assert ("timestamp_granularities[]", "word") in form
    assert not any(k == "language" for k, _ in form)
    assert ("temperature", "0.2") in form
    assert prompt_for(opts) == "Samuel Beckett. Worstward, Ho."


async def test_one_final_per_utterance() -> None:
    async with FakeGroq() as fake:
        gq = adapter(fake)
        events = await run(gq.open_stream("whisper-large-v3-turbo", StreamOptions()),
                           pcm("beckett.wav"))
        await gq.aclose()
    assert final_text(events) == BECKETT_TEXT
    check_segments(events)
    assert not any(isinstance(e, Transcript) and not e.is_final for e in events)
    assert len(fake.rest.requests) == 6  # the six sentences, cut at the pauses
    assert len(finals(events)) >= 5
    assert sum(isinstance(e, SpeechStarted) for e in events) == 6
    assert isinstance(events[-2], UtteranceEnd)
    usage = events[-1]
    assert isinstance(usage, ProviderUsage)
    assert usage.audio_seconds == pytest.approx(sum(r.seconds for r in fake.rest.requests))
    first = fake.rest.requests[0]
    assert first.headers["authorization"] == "Bearer gsk_test_key"
    assert first.fields["model"] == ["whisper-large-v3-turbo"]
    assert first.fields["language"] == ["en"]
    for t in finals(events):
        assert all(t.start - 0.01 <= w.start <= w.end <= t.end + 0.01 for w in t.words)


async def test_finalize_cuts_the_open_utterance() -> None:
    async with FakeGroq() as fake:
        gq = adapter(fake)
        # 12 frames = 1.2 s: inside the second sentence ("Ever failed.", 1.9-2.8 s)? No:
        # after the first; 22 frames = 2.2 s is mid-speech, so finalize must cut there.
        events = await run(gq.open_stream("whisper-large-v3", StreamOptions()),
                           pcm("beckett.wav"), finalize_after=22)
        await gq.aclose()
    index = finalized_after_finals(events)
    assert sum(isinstance(e, Finalized) for e in events) == 1
    assert len(fake.rest.requests) == 7  # the cut splits one sentence in two
    assert index > 0
    check_segments(events)


async def test_wrong_key_fails_the_start() -> None:
    async with FakeGroq() as fake:
        gq = adapter(fake, key="wrong")
        stream = gq.open_stream("whisper-large-v3", StreamOptions())
        with pytest.raises(ProviderAuthError) as err:
            await stream.start()
        await stream.aclose()
        await gq.aclose()
    assert err.value.code == 401 and "Invalid API Key" in str(err.value)
