"""Streaming Silero VAD and the voice-activity segmenter, on real speech."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.vad import get_vad_model

from adapters.local.vad import (
    SAMPLE_RATE,
    WINDOW,
    SileroVad,
    SpeechEnd,
    SpeechStart,
    Utterance,
    VadConfig,
    VadEvent,
    VoiceActivitySegmenter,
    pcm_to_float,
)
from tests.speech import pcm


def feed_in_chunks(seg: VoiceActivitySegmenter, data: bytes, seed: int,
                   max_samples: int = 5000) -> list[VadEvent]:
    rng = np.random.default_rng(seed)
    events: list[VadEvent] = []
    pos = 0
    while pos < len(data):
        size = 2 * int(rng.integers(1, max_samples))
        events += seg.feed(data[pos:pos + size])
        pos += size
    return events


def describe(events: list[VadEvent]) -> list[tuple[str, int, int]]:
    out = []
    for e in events:
        if isinstance(e, Utterance):
            out.append(("utterance", e.start, e.end))
        else:
            out.append((type(e).__name__, e.sample, 0))
    return out


def test_incremental_probabilities_equal_faster_whispers_offline_call() -> None:
    audio = pcm_to_float(pcm("beckett.wav"))
    usable = len(audio) // WINDOW * WINDOW
    offline = np.asarray(get_vad_model()(audio[:usable])).reshape(-1)
    vad = SileroVad()
    rng = np.random.default_rng(3)
    parts = []
    pos = 0
    while pos < usable:
        size = int(rng.integers(1, 3000))
        parts.append(vad(audio[pos:min(pos + size, usable)]))
        pos += size
    streamed = np.concatenate(parts)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=1e-5)
    assert (offline > 0.5).sum() > 50  # the recording has speech in it


@pytest.mark.parametrize("signal", ["zeros", "noise"])
def test_silence_gives_no_speech(signal: str) -> None:
    rng = np.random.default_rng(0)
    samples = np.zeros(5 * SAMPLE_RATE) if signal == "zeros" else rng.normal(0, 30, 5 * SAMPLE_RATE)
    seg = VoiceActivitySegmenter()
    events = seg.feed(samples.astype("<i2").tobytes()) + seg.flush()
    assert events == []
    assert not seg.in_speech and seg.open_utterance() is None
    assert seg.samples == 5 * SAMPLE_RATE


def test_speech_gives_start_end_and_utterances_in_order() -> None:
    data = pcm("beckett.wav")
    seg = VoiceActivitySegmenter()
    events = feed_in_chunks(seg, data, seed=1) + seg.flush()
    kinds = [type(e) for e in events]
    # Six phrases, each: start, end, utterance.
    assert kinds == [SpeechStart, SpeechEnd, Utterance] * 6
    previous_end = 0
    for start, end, utt in zip(events[0::3], events[1::3], events[2::3], strict=True):
        assert isinstance(start, SpeechStart) and isinstance(end, SpeechEnd)
        assert isinstance(utt, Utterance)
        assert previous_end <= utt.start < start.sample < end.sample < utt.end
        assert len(utt.audio) == utt.end - utt.start
        assert utt.reason == "silence"
        previous_end = utt.end
    assert previous_end <= len(data) // 2
    # The audio handed out is the stream's own audio at those offsets.
    samples = pcm_to_float(data)
    last = events[-1]
    assert isinstance(last, Utterance)
    np.testing.assert_array_equal(last.audio, samples[last.start:last.end])


def test_chunk_sizes_do_not_change_the_events() -> None:
    data = pcm("beckett.wav")
    a = VoiceActivitySegmenter()
    b = VoiceActivitySegmenter()
    one = describe(a.feed(data) + a.flush())
    many = describe(feed_in_chunks(b, data, seed=5, max_samples=700) + b.flush())
    assert one == many and len(one) == 18


def test_flush_closes_speech_that_runs_to_the_end() -> None:
    data = pcm("beckett.wav")[: int(8.6 * SAMPLE_RATE) * 2]  # stop inside "better"
    seg = VoiceActivitySegmenter()
    seg.feed(data)
    assert seg.in_speech
    current = seg.open_utterance()
    assert current is not None and current[0] + len(current[1]) == seg.samples
    events = seg.flush()
    assert [type(e) for e in events] == [SpeechEnd, Utterance]
    utt = events[-1]
    assert isinstance(utt, Utterance)
    assert utt.reason == "flush" and utt.end == len(data) // 2
    assert not seg.in_speech and seg.flush() == []


def test_long_speech_is_cut_at_quiet_points_without_gaps() -> None:
    seg = VoiceActivitySegmenter(VadConfig(max_utterance_s=3.0, min_silence_ms=2000))
    events = seg.feed(pcm("two_cities.wav")) + seg.flush()
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert any(u.reason == "max_length" for u in utterances)
    for before, after in zip(utterances, utterances[1:], strict=False):
        assert before.end - before.start <= 3 * SAMPLE_RATE
        if before.reason == "max_length":
            assert after.start == before.end  # contiguous: no audio lost at a cut


def test_cut_splits_the_open_utterance_and_speech_goes_on() -> None:
    data = pcm("two_cities.wav")
    seg = VoiceActivitySegmenter()
    seg.feed(data[: 4 * SAMPLE_RATE * 2])
    assert seg.in_speech
    cut = seg.cut()
    assert [type(e) for e in cut] == [Utterance]
    first = cut[0]
    assert isinstance(first, Utterance) and first.reason == "cut"
    assert first.end == 4 * SAMPLE_RATE and seg.in_speech
    rest = seg.feed(data[4 * SAMPLE_RATE * 2:]) + seg.flush()
    following = next(e for e in rest if isinstance(e, Utterance))
    assert following.start == first.end
    assert seg.cut() == []  # not in speech any more


def test_cut_during_a_pause_ends_speech() -> None:
    data = pcm("beckett.wav")
    seg = VoiceActivitySegmenter()
    seg.feed(data[: 3 * SAMPLE_RATE * 2])  # "Ever failed" ended at ~2.8 s
    assert seg.in_speech  # not yet 400 ms of silence
    events = seg.cut()
    assert [type(e) for e in events] == [SpeechEnd, Utterance]
    assert not seg.in_speech
    assert [type(e) for e in seg.feed(data[3 * SAMPLE_RATE * 2:])][0] is SpeechStart


def test_pending_utterance_is_the_one_silence_will_close() -> None:
    data = pcm("beckett.wav")
    seg = VoiceActivitySegmenter()
    cut = int(1.45 * SAMPLE_RATE) * 2  # "Ever tried" ended at ~1.18 s: a 270-ms pause
    assert seg.feed(data[:cut])[-1] == SpeechStart(5120)
    pending = seg.pending_utterance()
    assert pending is not None and seg.in_speech
    events = seg.feed(data[cut:int(2.0 * SAMPLE_RATE) * 2])
    closed = next(e for e in events if isinstance(e, Utterance))
    assert (closed.start, closed.end, closed.reason) == (pending.start, pending.end, "silence")
    np.testing.assert_array_equal(closed.audio, pending.audio)
    assert seg.pending_utterance() is None
