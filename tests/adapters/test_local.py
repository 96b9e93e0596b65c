"""The local engine on real speech: the real tiny.en model, driven through `open_stream`.

Audio is fed faster than real time. Where timing matters (partials), the feeder waits for
`LocalStream.wait_idle` after each chunk, i.e. it behaves like a real-time client on a fast
machine: every half second of audio gets its partial decode before more audio arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import pytest_asyncio

from adapters.base import (
    AdapterContext,
    Finalized,
    SpeechStarted,
    StreamEvent,
    StreamOptions,
    Transcript,
    UtteranceEnd,
)
from adapters.local.adapter import LocalAdapter
from adapters.local.stream import MAX_PENDING_FINALS, LocalStream
from tests.speech import BECKETT_TEXT, TWO_CITIES_TEXT, normalize, pcm, wer

RATE = 16_000

pytestmark = pytest.mark.slow  # the real model on speech: not in `make test-fast`


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def adapter() -> AsyncIterator[LocalAdapter]:
    local = LocalAdapter(AdapterContext())
    await local.warmup("tiny.en")
    yield local
    await local.aclose()


@dataclass
class Run:
    events: list[StreamEvent] = field(default_factory=list)

    @property
    def finals(self) -> list[Transcript]:
        return [e for e in self.events if isinstance(e, Transcript) and e.is_final]

    @property
    def partials(self) -> list[Transcript]:
        return [e for e in self.events if isinstance(e, Transcript) and not e.is_final]

    @property
    def text(self) -> str:
        return " ".join(f.text for f in self.finals)


def chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        out.append(data[pos:pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    return out


async def run_stream(adapter: LocalAdapter, parts: list[bytes], *, lockstep: bool,
                     finalize_after: int | None = None,
                     options: StreamOptions | None = None) -> Run:
    run = Run()
    stream = adapter.open_stream("tiny.en", options or StreamOptions())
    async with stream:
        assert isinstance(stream, LocalStream)

        async def consume() -> None:
            async for event in stream.events():
                run.events.append(event)

        consumer = asyncio.create_task(consume())
        for i, part in enumerate(parts):
            await stream.send_audio(part)
            if lockstep:
                await stream.wait_idle()
            if finalize_after == i:
                await stream.finalize()
        await stream.close_stream()
        await asyncio.wait_for(consumer, 120)
    return run


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def beckett(adapter: LocalAdapter) -> Run:
    return await run_stream(adapter, chunks(pcm("beckett.wav"), [3200]), lockstep=True)


def check_words(finals: list[Transcript], duration: float) -> None:
    last = 0.0
    for final in finals:
        assert final.words, final
        for word in final.words:
            assert last <= word.start <= word.end <= duration
            assert word.confidence is not None and 0.0 < word.confidence <= 1.0
            last = word.start
        assert final.start == final.words[0].start and final.end == final.words[-1].end
        assert final.confidence is not None and 0.0 < final.confidence <= 1.0
        assert final.language == "en"


async def test_beckett_finals_are_accurate_with_word_timestamps(beckett: Run) -> None:
    assert wer(BECKETT_TEXT, beckett.text) <= 0.2, beckett.text
    check_words(beckett.finals, len(pcm("beckett.wav")) / 2 / RATE)
    # "Ever tried." starts at ~0.3 s and "better" ends before 9 s.
    assert 0.1 <= beckett.finals[0].words[0].start <= 0.6
    assert 8.0 <= beckett.finals[-1].words[-1].end <= 9.2


async def test_speech_started_and_utterance_end_frame_each_final(beckett: Run) -> None:
    starts = [e.time for e in beckett.events if isinstance(e, SpeechStarted)]
    ends = [e.time for e in beckett.events if isinstance(e, UtteranceEnd)]
    assert len(starts) == len(ends) == len(beckett.finals) == 6
    for start, end, final in zip(starts, ends, beckett.finals, strict=True):
        assert start < end
        assert final.start - 0.3 <= start <= final.end
    # Every UtteranceEnd comes right after its final.
    for i, event in enumerate(beckett.events):
        if isinstance(event, UtteranceEnd):
            previous = beckett.events[i - 1]
            assert isinstance(previous, Transcript) and previous.is_final


async def test_partials_come_before_their_final_and_share_its_segment_id(beckett: Run) -> None:
    assert len(beckett.partials) >= 6
    final_ids = [f.segment_id for f in beckett.finals]
    assert len(set(final_ids)) == len(final_ids)  # one final per segment
    final_at = {e.segment_id: i for i, e in enumerate(beckett.events)
                if isinstance(e, Transcript) and e.is_final}
    for i, event in enumerate(beckett.events):
        if isinstance(event, Transcript) and not event.is_final:
            assert event.segment_id in final_at
            assert i < final_at[event.segment_id]
    # Each phrase is short; its partials already read it.
    for final in beckett.finals:
        mine = [p for p in beckett.partials if p.segment_id == final.segment_id]
        assert mine and normalize(mine[-1].text) == normalize(final.text)


async def test_agreed_prefix_never_changes(adapter: LocalAdapter,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.local.stream")
    data = pcm("two_cities.wav")[: 42 * RATE * 2]
    run = await run_stream(adapter, chunks(data, [16000]), lockstep=True)
    agreed: dict[str, list[tuple[str, ...]]] = {}
    for record in caplog.records:
        if record.getMessage().startswith("partial "):
            segment_id, stable = record.args  # type: ignore[misc]
            agreed.setdefault(segment_id, []).append(stable)
    assert sum(len(v) for v in agreed.values()) == len(run.partials)
    longest = max(agreed.values(), key=len)
    assert len(longest) >= 10 and len(longest[-1]) >= 15  # the 12-s sentence at the end
    for history in agreed.values():
        for before, after in zip(history, history[1:], strict=False):
            assert after[:len(before)] == before
    # Each partial shows the prefix agreed when it was made, and never the same text twice.
    stables = [s for history in agreed.values() for s in history]
    for partial, stable in zip(run.partials, stables, strict=True):
        assert partial.text.split()[:len(stable)] == list(stable)
    texts = [(p.segment_id, p.text) for p in run.partials]
    assert all(a != b for a, b in zip(texts, texts[1:], strict=False))
    assert wer(TWO_CITIES_TEXT, run.text) <= 0.2


async def test_finalize_mid_stream_emits_finals_then_finalized(adapter: LocalAdapter) -> None:
    data = pcm("beckett.wav")
    parts = chunks(data, [3200])  # 0.1 s each
    # Finalize at 3.0 s: "Ever failed" ended at ~2.8 s, before VAD would close it (3.2 s).
    run = await run_stream(adapter, parts, lockstep=False, finalize_after=29)
    kinds = [type(e) for e in run.events]
    assert kinds.count(Finalized) == 1
    at = kinds.index(Finalized)
    before = " ".join(e.text for e in run.events[:at] if isinstance(e, Transcript) and e.is_final)
    after = " ".join(e.text for e in run.events[at:] if isinstance(e, Transcript) and e.is_final)
    assert normalize(before) == ["ever", "tried", "ever", "failed"]
    assert "failed" not in normalize(after) and "better" in normalize(after)
    # The speaker was pausing at the finalize: the next phrase starts a new speech turn.
    assert sum(isinstance(e, SpeechStarted) for e in run.events) == 6
    assert wer(BECKETT_TEXT, run.text) <= 0.2


async def test_close_right_after_the_last_word_keeps_it(adapter: LocalAdapter) -> None:
    data = pcm("beckett.wav")[: int(8.9 * RATE) * 2]  # "Fail better" ends at ~8.8 s
    run = await run_stream(adapter, chunks(data, [4000]), lockstep=False)
    assert normalize(run.finals[-1].text)[-1] == "better"
    assert wer(BECKETT_TEXT, run.text) <= 0.2
    check_words(run.finals, len(data) / 2 / RATE)


async def test_odd_chunk_sizes_fed_fast(adapter: LocalAdapter) -> None:
    data = pcm("two_cities.wav")
    # Odd byte counts too: a chunk may end in the middle of a sample.
    sizes = [int(n) for n in np.random.default_rng(11).integers(1, 8000, 300)]
    assert any(n % 2 for n in sizes)
    run = await run_stream(adapter, chunks(data, sizes), lockstep=False)
    assert wer(TWO_CITIES_TEXT, run.text) <= 0.2, run.text
    check_words(run.finals, len(data) / 2 / RATE)


async def test_send_audio_applies_backpressure(adapter: LocalAdapter) -> None:
    data = pcm("two_cities.wav") * 2
    stream = adapter.open_stream("tiny.en", StreamOptions(interim_results=False))
    finals: list[Transcript] = []
    pending: list[int] = []
    async with stream:
        assert isinstance(stream, LocalStream)

        async def consume() -> None:
            async for event in stream.events():
                if isinstance(event, Transcript):
                    finals.append(event)

        consumer = asyncio.create_task(consume())
        for part in chunks(data, [3200]):
            await stream.send_audio(part)
            pending.append(len(stream._jobs))
        await stream.close_stream()
        await asyncio.wait_for(consumer, 120)
    assert max(pending) == MAX_PENDING_FINALS  # the limit was reached and held
    assert all(f.is_final for f in finals)
    assert wer(TWO_CITIES_TEXT + " " + TWO_CITIES_TEXT, " ".join(f.text for f in finals)) <= 0.2


async def test_final_decoded_during_the_pause_is_used(adapter: LocalAdapter,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.local import stream as local_stream

    calls: list[float] = []
    real = local_stream.decode_final

    def counting(*args: object, **kwargs: object) -> Transcript:
        calls.append(len(args[1]) / RATE)  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(local_stream, "decode_final", counting)
    run = await run_stream(adapter, chunks(pcm("beckett.wav"), [3200]), lockstep=True)
    assert wer(BECKETT_TEXT, run.text) <= 0.2
    # Each final was decoded once, while VAD was still confirming the pause.
    assert len(calls) == len(run.finals) == 6


async def test_concurrent_streams_share_one_model(adapter: LocalAdapter) -> None:
    data = pcm("beckett.wav")
    runs = await asyncio.gather(*(
        run_stream(adapter, chunks(data, [3200]), lockstep=True) for _ in range(3)))
    for run in runs:
        assert wer(BECKETT_TEXT, run.text) <= 0.2
    other = LocalAdapter(AdapterContext())
    try:
        assert await other.load("tiny.en") is await adapter.load("tiny.en")
    finally:
        await other.aclose()


async def test_a_failing_decode_ends_the_stream_with_a_provider_error(
        adapter: LocalAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.base import ProviderError
    from adapters.local import stream as local_stream

    def broken(*args: object, **kwargs: object) -> Transcript:
        raise RuntimeError("CTranslate2 ran out of memory")

    monkeypatch.setattr(local_stream, "decode_final", broken)
    monkeypatch.setattr(local_stream, "decode_partial", broken)
    stream = adapter.open_stream("tiny.en", StreamOptions())
    async with stream:
        for part in chunks(pcm("beckett.wav"), [3200]):
            await stream.send_audio(part)  # never hangs, even with the decoder gone
        await stream.close_stream()
        with pytest.raises(ProviderError, match="out of memory"):
            async for _ in stream.events():
                pass
