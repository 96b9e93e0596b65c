"""Append-only text from revisable partials.

A provider's partial transcripts of one segment are hypotheses: each may rewrite the words of
the one before. Clients of an append-only protocol (OpenAI's transcription ``delta`` events)
cannot take words back, so `Stabilizer` only releases a word once it is *settled*: the last
`agree` hypotheses share it (same word, ignoring case and punctuation) and it is not among the
newest `hold_back` words of the latest hypothesis. The final then releases the rest.

Invariant: the concatenation of every delta returned equals the ``completed`` text of
`Stabilizer.final` — words already released are never repeated nor taken back.
"""

from __future__ import annotations

import re

from adapters.base import Transcript
from adapters.local.agreement import common_prefix

_EDGES = re.compile(r"^[^\w']+|[^\w']+$")


def norm(word: str) -> str:
    """A word's identity for agreement: lower case, no surrounding punctuation."""
    return _EDGES.sub("", word).lower()


class Stabilizer:
    """One segment (or one transcription item)'s words, released append-only."""

    def __init__(self, *, agree: int = 2, hold_back: int = 1) -> None:
        if agree < 1 or hold_back < 0:
            raise ValueError("agree must be >= 1 and hold_back >= 0")
        self.agree = agree
        self.hold_back = hold_back
        self.released: list[str] = []
        self._history: list[list[str]] = []

    @property
    def stable_words(self) -> int:
        """How many leading words are settled (already released)."""
        return len(self.released)

    def settled(self, text: str) -> int:
        """How many leading words of `text` (a new hypothesis) are settled; call `partial`
        to release them."""
        words = text.split()
        history = [*self._history[-(self.agree - 1):], words] if self.agree > 1 else [words]
        n = len(words) - self.hold_back
        for older in history[:-1]:
            n = min(n, common_prefix(older, words, norm))
        if len(history) < self.agree:
            n = min(n, len(self.released))
        if common_prefix(self.released, words, norm) < len(self.released):
            return len(self.released)  # the hypothesis disagrees with released words: wait
        return max(n, len(self.released))

    def partial(self, text: str) -> str:
        """Feed a hypothesis; returns the newly settled text to append (may be "")."""
        n = self.settled(text)
        words = text.split()
        self._history.append(words)
        del self._history[:-max(1, self.agree)]
        return self._release(words[len(self.released):n])

    def final(self, text: str) -> tuple[str, str]:
        """The final hypothesis: (the delta still to append, the completed text)."""
        words = text.split()
        delta = self._release(words[len(self.released):])
        return delta, " ".join(self.released)

    def _release(self, words: list[str]) -> str:
        if not words:
            return ""
        lead = " " if self.released else ""
        self.released.extend(words)
        return lead + " ".join(words)


class StableWords:
    """``stable_words`` of the native json/verbose_json partials: per segment, how many
    leading words of each partial are settled (a final: all of them). Settled words have
    been the same in two hypotheses and are not the newest; a provider may in rare cases still
    change one in its final, which the OpenAI front-end's append-only stream cannot show."""

    MAX_SEGMENTS = 64  # open segments tracked at once (bounded; oldest dropped)

    def __init__(self) -> None:
        self._segments: dict[str, Stabilizer] = {}

    def count(self, event: Transcript) -> int:
        if event.is_final:
            self._segments.pop(event.segment_id, None)
            return len(event.text.split())
        stabilizer = self._segments.get(event.segment_id)
        if stabilizer is None:
            while len(self._segments) >= self.MAX_SEGMENTS:
                self._segments.pop(next(iter(self._segments)))
            stabilizer = self._segments[event.segment_id] = Stabilizer()
        stabilizer.partial(event.text)
        return stabilizer.stable_words
