"""Decoding one utterance with faster-whisper: the blocking calls the local engine runs in its
thread pool, and the turning of faster-whisper segments into our `Transcript`.

Options follow the streaming use: we do VAD ourselves (``vad_filter=False``), each utterance
is decoded on its own (``condition_on_previous_text=False``), one temperature only (a
fallback ladder would re-decode up to six times and wreck latency), and the number of new
tokens is bounded by the audio length so a confused model cannot loop for seconds.
Partials are greedy without timestamps; finals use beam search with word timestamps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from adapters.base import StreamOptions, Transcript, Word
from adapters.local.models import FINAL_ENCODER_FRAMES, PARTIAL_ENCODER_FRAMES
from adapters.local.vad import SAMPLE_RATE

PARTIAL_BEAM = 1
FINAL_BEAM = 5


@dataclass(frozen=True, slots=True)
class FinalEffort:
    """How hard a final decode tries: beam width and minimum encoder window (mel frames)."""

    beam_size: int
    encoder_frames: int


# Shed accuracy, not latency, when finals pile up (more streams than the pool keeps up with).
# On tests/speech.py (two_cities) the three levels score 2.5 / 2.5 / 3.4 % WER at 1 / 0.9 /
# 0.7 times the decode time.
EFFORT_IDLE = FinalEffort(FINAL_BEAM, FINAL_ENCODER_FRAMES)
EFFORT_BUSY = FinalEffort(2, FINAL_ENCODER_FRAMES)
EFFORT_BACKLOG = FinalEffort(1, PARTIAL_ENCODER_FRAMES)


def final_effort(other_finals: int) -> FinalEffort:
    """Effort for a final given how many other finals are decoding or waiting."""
    if other_finals <= 0:
        return EFFORT_IDLE
    return EFFORT_BUSY if other_finals == 1 else EFFORT_BACKLOG
# Whisper's decoder holds 448 tokens, of which up to 223 may be prompt.
MAX_NEW_TOKENS = 220


@dataclass(frozen=True, slots=True)
class DecodeSettings:
    """What the client asked for, in faster-whisper's terms."""

    language: str | None = "en"  # None: detect
    initial_prompt: str | None = None
    hotwords: str | None = None  # custom vocabulary, given to the model as a prompt
    temperature: float = 0.0

    @classmethod
    def from_options(cls, options: StreamOptions) -> DecodeSettings:
        return cls(
            language=None if options.language == "auto" else options.language,
            initial_prompt=options.initial_prompt or None,
            hotwords=", ".join(options.custom_vocabulary) or None,
            temperature=options.temperature if options.temperature is not None else 0.0,
        )

    def with_language(self, language: str | None) -> DecodeSettings:
        return dataclasses.replace(self, language=language)


def _max_new_tokens(samples: int) -> int:
    # ~3 words (~4 tokens) per second of fast speech, with generous headroom.
    return min(MAX_NEW_TOKENS, 16 + int(10 * samples / SAMPLE_RATE))


def _common_kwargs(settings: DecodeSettings, samples: int) -> dict[str, Any]:
    return {
        "language": settings.language,
        "initial_prompt": settings.initial_prompt,
        "hotwords": settings.hotwords,
        "temperature": [settings.temperature],
        "condition_on_previous_text": False,
        "vad_filter": False,
        "max_new_tokens": _max_new_tokens(samples),
    }


def _window(model: Any, frames: int) -> contextlib.AbstractContextManager[None]:
    """The model's encoder window for this decode (a plain WhisperModel has none)."""
    setter = getattr(model, "encoder_window", None)
    return setter(frames) if setter is not None else contextlib.nullcontext()


def decode_partial(model: Any, audio: np.ndarray, settings: DecodeSettings
                   ) -> tuple[list[str], str | None]:
    """Words of a quick greedy decode of the open utterance, and its language."""
    with _window(model, PARTIAL_ENCODER_FRAMES):
        segments, info = model.transcribe(
            audio, beam_size=PARTIAL_BEAM, without_timestamps=True, word_timestamps=False,
            **_common_kwargs(settings, len(audio)))
        text = "".join(segment.text for segment in segments)
    return text.split(), info.language


def decode_final(model: Any, audio: np.ndarray, offset: float, segment_id: str,
                 settings: DecodeSettings, effort: FinalEffort = EFFORT_IDLE) -> Transcript:
    """The final transcript of one utterance; times in seconds from the stream's start."""
    with _window(model, effort.encoder_frames):
        segments, info = model.transcribe(
            audio, beam_size=effort.beam_size, without_timestamps=False, word_timestamps=True,
            **_common_kwargs(settings, len(audio)))
        segments = list(segments)
    duration = len(audio) / SAMPLE_RATE
    words = clean_words(
        [(w.word, w.start, w.end, w.probability) for s in segments for w in in_words(s)],
        offset, offset + duration)
    text = "".join(segment.text for segment in segments).strip()
    if words:
        confidence: float | None = float(np.mean([w.confidence or 0.0 for w in words]))
    elif segments:
        confidence = float(math.exp(np.mean([s.avg_logprob for s in segments])))
    else:
        confidence = None
    return Transcript(
        segment_id=segment_id, is_final=True, text=text,
        start=words[0].start if words else offset,
        end=words[-1].end if words else offset + duration,
        words=tuple(words), confidence=confidence, language=info.language)


def in_words(segment: Any) -> list[Any]:
    return list(segment.words or ())


def clean_words(raw: list[tuple[str, float, float, float]], lo: float, hi: float
                ) -> list[Word]:
    """Shift, clamp into ``[lo, hi]`` and make monotonic the word times of one utterance."""
    words: list[Word] = []
    last = lo
    for text, start, end, probability in raw:
        token = text.strip()
        if not token:
            continue
        begin = min(max(lo + start, last), hi)
        finish = min(max(lo + end, begin), hi)
        words.append(Word(token, round(begin, 3), round(finish, 3),
                          round(float(probability), 4)))
        last = finish
    return words
