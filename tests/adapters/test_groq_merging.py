"""Cost-aware Groq uploads: short utterances merge into requests of at most 10 s (Groq's
minimum billed length), with the real audio between them so word times stay exact; a held
utterance goes out when the latency bound runs out, on finalize and at the end of stream."""

from __future__ import annotations

import asyncio

import pytest

from adapters._merging import MergingSegmentedStream
from adapters.base import (
    AdapterContext,
    Finalized,
    ProviderUsage,
    StreamEvent,
    StreamOptions,
    Transcript,
    UtteranceEnd,
)
from adapters.groq import GroqAdapter
from tests.fakes.driver import check_segments, final_text, finals, frames, run
from tests.fakes.groq import FakeGroq
from tests.speech import BECKETT_TEXT, pcm

AUDIO = pcm("beckett.wav")


def adapter(fake: FakeGroq, merge_wait: float) -> GroqAdapter:
    return GroqAdapter(AdapterContext(api_key="gsk_test_key", base_url=fake.base_url,
                                      connect_timeout=5, flush_timeout=5,
                                      merge_wait=merge_wait))


async def test_short_utterances_share_one_request_within_ten_seconds() -> None:
    async with FakeGroq() as fake:
        gq = adapter(fake, merge_wait=60.0)  # only the 10 s bound and the close flush apply
        try:
            stream = gq.open_stream("whisper-large-v3-turbo", StreamOptions())
            assert isinstance(stream, MergingSegmentedStream)
            events = await run(stream, AUDIO)
        finally:
            await gq.aclose()
    # The six sentences (six requests without merging, test_groq.py) fit in 8.9 s: one
    # request, cut from the client's own audio (the fake finds it bit-exact in the reference).
    assert len(fake.rest.requests) == 1 and fake.rest.requests[0].seconds <= 10.0
    _check(events, fake)


@pytest.mark.parametrize("bound", [3.0, 5.0])
async def test_no_request_grows_past_the_billing_minimum(monkeypatch: pytest.MonkeyPatch,
                                                         bound: float) -> None:
    from adapters import _merging

    monkeypatch.setattr(_merging, "MIN_BILLED_SECONDS", bound)  # 10 s is longer than the audio
    async with FakeGroq() as fake:
        gq = adapter(fake, merge_wait=60.0)
        try:
            events = await run(gq.open_stream("whisper-large-v3-turbo", StreamOptions()), AUDIO)
        finally:
            await gq.aclose()
    assert 1 < len(fake.rest.requests) < 6
    assert all(r.seconds <= bound + 1e-6 for r in fake.rest.requests)
    _check(events, fake)


def _check(events: list[StreamEvent], fake: FakeGroq) -> None:
    assert final_text(events) == BECKETT_TEXT
    check_segments(events)
    assert len(finals(events)) == len(fake.rest.requests)
    words = [w for f in finals(events) for w in f.words]
    assert [w.word for w in words] == BECKETT_TEXT.split()
    assert all(a.end <= b.start + 1e-6 for a, b in zip(words, words[1:], strict=False))
    assert words[-1].end <= len(AUDIO) / 32000 + 0.01
    # Every utterance still reports its end, after the final that holds it.
    ends = [i for i, e in enumerate(events) if isinstance(e, UtteranceEnd)]
    assert len(ends) == 6
    first_final = next(i for i, e in enumerate(events) if isinstance(e, Transcript))
    assert ends[0] > first_final
    usage = [e for e in events if isinstance(e, ProviderUsage)]
    assert usage[-1].audio_seconds == pytest.approx(sum(r.seconds for r in fake.rest.requests))


async def test_a_held_utterance_goes_out_when_the_wait_runs_out() -> None:
    async with FakeGroq() as fake:
        gq = adapter(fake, merge_wait=0.3)
        stream = gq.open_stream("whisper-large-v3-turbo", StreamOptions())
        events: list[StreamEvent] = []
        got_final = asyncio.Event()
        try:
            await stream.start()

            async def collect() -> None:
                async for event in stream.events():
                    events.append(event)
                    if isinstance(event, Transcript):
                        got_final.set()

            reader = asyncio.create_task(collect())
            for frame in frames(AUDIO[: 18 * 3200]):  # "Ever tried." and its pause
                await stream.send_audio(frame)
            async with asyncio.timeout(10):  # no finalize, no close: the bound sends it
                await got_final.wait()
            assert final_text(events) == "Ever tried."
            await stream.close_stream()
            async with asyncio.timeout(10):
                await reader
        finally:
            await stream.aclose()
            await gq.aclose()


async def test_finalize_sends_what_is_held() -> None:
    async with FakeGroq() as fake:
        gq = adapter(fake, merge_wait=60.0)
        try:
            events = await run(gq.open_stream("whisper-large-v3", StreamOptions()), AUDIO,
                               finalize_after=40)
        finally:
            await gq.aclose()
    index = next(i for i, e in enumerate(events) if isinstance(e, Finalized))
    before = final_text(events[:index])
    assert before.startswith("Ever tried. Ever failed.")  # held, then flushed by finalize
    assert final_text(events).replace(" ", "") == BECKETT_TEXT.replace(" ", "")


async def test_merging_is_off_without_a_wait() -> None:
    async with FakeGroq() as fake:
        gq = adapter(fake, merge_wait=0.0)
        try:
            stream = gq.open_stream("whisper-large-v3", StreamOptions())
            assert not isinstance(stream, MergingSegmentedStream)
            await run(stream, AUDIO)
        finally:
            await gq.aclose()
    assert len(fake.rest.requests) == 6
