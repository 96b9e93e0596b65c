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

_EDGES = re.compile(r"^[^\w']+|[^\w']+$")


def norm(word: str) -> str:
    """A word's identity for agreement: lower case, no surrounding punctuation."""
    if word.isalnum():  # the common case, and what ``\w`` matches: nothing to strip
        return word.lower()
    return _EDGES.sub("", word).lower()


def _keys(words: list[str]) -> list[str]:
    """`norm` of each word (inlined for the common case: a stabilizer runs per partial)."""
    return [w.lower() if w.isalnum() else norm(w) for w in words]


def _prefix(a: list[str], b: list[str]) -> int:
    """Length of the common prefix of two lists of `norm` keys."""
    for n, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return n
    return min(len(a), len(b))


class Stabilizer:
    """One segment (or one transcription item)'s words, released append-only."""

    def __init__(self, *, agree: int = 2, hold_back: int = 1) -> None:
        if agree < 1 or hold_back < 0:
            raise ValueError("agree must be >= 1 and hold_back >= 0")
        self.agree = agree
        self.hold_back = hold_back
        self.released: list[str] = []
        self._released_keys: list[str] = []  # `norm` of each released word
        self._history: list[list[str]] = []  # the last hypotheses, as `norm` keys

    @property
    def stable_words(self) -> int:
        """How many leading words are settled (already released)."""
        return len(self.released)

    def settled(self, text: str) -> int:
        """How many leading words of `text` (a new hypothesis) are settled; call `partial`
        to release them."""
        return self._settled(_keys(text.split()))

    def _settled(self, keys: list[str]) -> int:
        done = len(self.released)
        if keys[:done] != self._released_keys:
            return done  # the hypothesis disagrees with released words: wait
        older = self._history[-(self.agree - 1):] if self.agree > 1 else []
        n = len(keys) - self.hold_back
        for hypothesis in older:
            agreed = len(hypothesis)
            if keys[:agreed] != hypothesis:  # not a mere continuation: word by word
                agreed = _prefix(hypothesis, keys)
            n = min(n, agreed)
        if len(older) + 1 < self.agree:
            n = min(n, done)
        return max(n, done)

    def partial(self, text: str) -> str:
        """Feed a hypothesis; returns the newly settled text to append (may be "")."""
        words = text.split()
        keys = _keys(words)
        n = self._settled(keys)
        self._history.append(keys)
        del self._history[:-max(1, self.agree)]
        return self._release(words[len(self.released):n], keys)

    def final(self, text: str) -> tuple[str, str]:
        """The final hypothesis: (the delta still to append, the completed text)."""
        words = text.split()
        delta = self._release(words[len(self.released):], None)
        return delta, " ".join(self.released)

    def _release(self, words: list[str], keys: list[str] | None) -> str:
        if not words:
            return ""
        lead = " " if self.released else ""
        done = len(self.released)
        self.released.extend(words)
        self._released_keys.extend(keys[done:done + len(words)] if keys is not None
                                   else _keys(words))
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
