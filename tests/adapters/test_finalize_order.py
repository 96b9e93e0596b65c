"""`finalized` follows its finals, always, for the providers that never acknowledge a finalize
(AssemblyAI's ForceEndpoint, Gladia's injected silence): finalize exactly while a turn is
ending (the fakes answer 0.3 s after hearing, so the end of the turn is still on its way
when the finalize goes out), again and again, and every word spoken before the finalize
point must be in a final that precedes the `Finalized`."""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import Finalized, StreamEvent, StreamOptions, Transcript
from tests.fakes.driver import check_segments, collect, final_text, frames, run
from tests.fakes.providers import upstream
from tests.fakes.recognizer import Recognizer
from tests.speech import pcm

CLIP = pcm("beckett.wav")[: 3 * 32000]
CLIP_TEXT = "Ever tried. Ever failed. No matter."
# Finalize after k frames of 100 ms: around the ends of "Ever tried." (revealed at 1.0 s)
# and "Ever failed." (2.0 s), and as the next sentence's first word comes in (1.5 s, 2.5 s).
POINTS = [10, 11, 12, 13, 14, 15, 16, 20, 21, 25]


def words_heard_by(seconds: float) -> int:
    """Words the fakes' recognizer reveals from the clip's first `seconds` (50 ms frames)."""
    recognizer = Recognizer(CLIP_TEXT, 3.0)
    end = int(seconds * 32000) // 2 * 2
    for i in range(0, end, 1600):
        recognizer.feed(CLIP[i:min(i + 1600, end)])
    return len(recognizer.words)


def check_order(events: list[StreamEvent], point: float) -> None:
    index = next(i for i, e in enumerate(events) if isinstance(e, Finalized))
    assert sum(isinstance(e, Finalized) for e in events) == 1
    before = [e for e in events[:index] if isinstance(e, Transcript) and e.is_final]
    words = sum(len(t.text.split()) for t in before)
    assert words >= words_heard_by(point), (point, [t.text for t in before], events)
    check_segments(events)


@pytest.mark.parametrize("run_index", range(20))
async def test_assemblyai_finalize_while_a_turn_is_ending(run_index: int) -> None:
    from adapters.assemblyai import AssemblyAIStream

    k = POINTS[run_index % len(POINTS)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AssemblyAIStream, "pace", 4.0)  # the adapter and the fake, 4x real time
        async with upstream("assemblyai", text=CLIP_TEXT, speech_seconds=3.0,
                            clock_scale=4.0, latency=0.3) as up:
            stream = up.adapter.open_stream(up.model, StreamOptions())
            events = await run(stream, CLIP, finalize_after=k)
    check_order(events, k / 10)
    assert final_text(events) == CLIP_TEXT


@pytest.mark.parametrize("k", POINTS)
async def test_gladia_finalize_while_an_utterance_is_ending(k: int) -> None:
    async with upstream("gladia", text=CLIP_TEXT, speech_seconds=3.0, latency=0.3) as up:
        stream = up.adapter.open_stream(up.model, StreamOptions())
        events = await run(stream, CLIP, finalize_after=k, realtime=True)
    check_order(events, k / 10)
    assert final_text(events) == CLIP_TEXT


@pytest.mark.parametrize(("provider", "fake_kw"), [("deepgram", {"speed": 2.0}),
                                                    ("soniox", {})])
async def test_each_finalize_answer_acknowledges_only_its_own_request(
        provider: str, fake_kw: dict[str, float]) -> None:
    """Deepgram and Soniox answer each finalize in turn (``from_finalize``, ``<fin>``). Six
    finalizes sent faster than the provider works through the audio: the k-th `Finalized`
    follows the finals of everything sent before the k-th request, not only the first's."""
    pieces = 6
    size = len(CLIP) // pieces // 2 * 2
    async with upstream(provider, text=CLIP_TEXT, speech_seconds=3.0, **fake_kw) as up:
        stream = up.adapter.open_stream(up.model, StreamOptions())
        events: list[StreamEvent] = []
        async with asyncio.timeout(30):
            await stream.start()
            reader = asyncio.create_task(collect(stream, events))
            try:
                for i in range(pieces):
                    for frame in frames(CLIP[i * size:(i + 1) * size], 16000, 100):
                        await stream.send_audio(frame)
                    await stream.finalize()
                await stream.close_stream()
                await reader
            finally:
                reader.cancel()
                await stream.aclose()
    acks = [i for i, e in enumerate(events) if isinstance(e, Finalized)]
    assert len(acks) == pieces, events
    for k, index in enumerate(acks, start=1):
        before = [e for e in events[:index] if isinstance(e, Transcript) and e.is_final]
        words = sum(len(t.text.split()) for t in before)
        assert words >= words_heard_by(k * size / 32000), (k, [t.text for t in before])
    assert final_text(events) == CLIP_TEXT
    check_segments(events)
