"""A deterministic stand-in for a speech recognizer, shared by the provider fakes.

The test tells the fake which text the audio holds and how many seconds of speech it is; the
recognizer reveals the words one by one in proportion to the speech audio received, so a fake
only "hears" what the adapter really delivered (drop audio, or send it at the wrong rate, and
words are missing). Runs of exact digital silence (zeros, >= 10 ms) are not speech: they
advance stream time only, like the pauses a real recognizer endpoints on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SENTENCE_END = (".", "!", "?")


@dataclass(frozen=True, slots=True)
class FakeWord:
    text: str
    start: float  # seconds of stream time
    end: float

    @property
    def bare(self) -> str:
        """The word as an unpunctuated recognizer would say it."""
        return self.text.strip(".,;:!?-\"'").lower()

    @property
    def ends_sentence(self) -> bool:
        return self.text.endswith(SENTENCE_END)


class Recognizer:
    def __init__(self, text: str, speech_seconds: float, rate: int = 16000) -> None:
        self.tokens = text.split()
        self.per_word = speech_seconds / max(1, len(self.tokens))
        self.rate = rate
        self.received = 0.0  # stream seconds
        self.speech = 0.0  # seconds of non-silent audio
        self.silence_run = 0.0  # seconds of trailing digital silence
        self.words: list[FakeWord] = []  # revealed so far
        self.closed = 0  # words[:closed] belong to closed segments

    def feed(self, pcm: bytes) -> list[FakeWord]:
        """Account for a chunk of s16le audio; returns the words it revealed."""
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
        chunk_start = self.received
        self.received += len(samples) / self.rate
        silent = _silent_samples(samples, self.rate // 100)
        speech = (len(samples) - silent) / self.rate
        if speech == 0:
            self.silence_run += len(samples) / self.rate
        else:
            nonzero = np.flatnonzero(samples)
            self.silence_run = (len(samples) - 1 - int(nonzero[-1])) / self.rate
        before = self.speech
        self.speech += speech
        revealed: list[FakeWord] = []
        while (len(self.words) < len(self.tokens)
               and (len(self.words) + 1) * self.per_word <= self.speech + 0.02):
            index = len(self.words)
            end = chunk_start + max(0.0, (index + 1) * self.per_word - before)
            end = min(end, self.received)
            word = FakeWord(self.tokens[index], round(max(0.0, end - 0.8 * self.per_word), 3),
                            round(end, 3))
            self.words.append(word)
            revealed.append(word)
        return revealed

    def resume_from(self, reference: bytes, head: bytes) -> None:
        """A client resumed mid-recording: find where `head` (the first audio of this session)
        sits in `reference` (the whole recording) and account for the speech before it as
        already heard and finalized, so this session says only the words after it — as a real
        recognizer fed the second half of a recording would. No match: nothing changes."""
        needle = head[: min(len(head), 1600)]
        if len(needle) < 64 or self.received:
            return
        at = reference.find(needle)
        while at > 0 and at % 2:
            at = reference.find(needle, at + 1)
        if at <= 0:
            return
        self.feed(reference[:at])
        self.closed = len(self.words)
        self.received = 0.0
        self.silence_run = 0.0

    def open_words(self) -> list[FakeWord]:
        return self.words[self.closed:]

    def close_segment(self, through: FakeWord | None = None) -> list[FakeWord]:
        """Close the open segment (up to and including `through`) and return its words."""
        end = len(self.words) if through is None else self.words.index(through) + 1
        words = self.words[self.closed:end]
        self.closed = max(self.closed, end)
        return words

    @property
    def complete(self) -> bool:
        return len(self.words) == len(self.tokens)


def _silent_samples(samples: np.ndarray, min_run: int) -> int:
    """Number of samples inside runs of zeros at least `min_run` long."""
    zero = samples == 0
    if not zero.any():
        return 0
    edges = np.diff(np.concatenate(([0], zero.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    return int(lengths[lengths >= min_run].sum())


def join(words: list[FakeWord], punctuate: bool = True) -> str:
    return " ".join(w.text if punctuate else w.bare for w in words)
