"""Stable partial transcripts: the LocalAgreement-n policy, as pure functions.

Streaming Whisper re-decodes the open utterance every half second, and each hypothesis may
rewrite its tail. LocalAgreement-2 (Macháček et al., "Turning Whisper into Real-Time
Transcription System", 2023, https://arxiv.org/abs/2307.14743) commits the longest prefix on
which the last two hypotheses agree; a committed word is never taken back. A partial shown to
the user is then ``committed + tentative tail of the newest hypothesis``, so its beginning does
not jitter.

Words are compared after normalisation (case, punctuation), so "Ever tried," and "ever tried."
agree; the committed text keeps the spelling of the hypothesis that first committed it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

_STRIP = re.compile(r"[^\w']+")


def normalize_word(word: str) -> str:
    """Comparison key of a word: lower case without punctuation."""
    return _STRIP.sub("", word.lower())


def common_prefix(a: list[str], b: list[str],
                  key: Callable[[str], str] = normalize_word) -> int:
    """Length of the longest common prefix of two word lists (words compared by `key`)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if key(x) != key(y):
            break
        n += 1
    return n


@dataclass(frozen=True, slots=True)
class Agreement:
    """The committed words (never change once returned) and the tentative tail."""

    stable: tuple[str, ...]
    tentative: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.stable + self.tentative)


@dataclass
class LocalAgreement:
    """LocalAgreement-n over word hypotheses of one growing utterance.

    Feed each new hypothesis (all words of the utterance so far) to `update`. A word becomes
    stable when the last ``n`` hypotheses agree on it and on every word before it. The stable
    prefix only grows.
    """

    n: int = 2
    stable: list[str] = field(default_factory=list)
    _history: list[list[str]] = field(default_factory=list)

    def update(self, words: list[str]) -> Agreement:
        self._history.append(list(words))
        del self._history[:-self.n]
        if len(self._history) == self.n:
            # Agreement is sought after the stable prefix, so a hypothesis that rewrote a
            # stable word ("and short" -> "in short") does not block later commits.
            tails = [self._tail(h) for h in self._history]
            agreed = len(tails[-1])
            for other in tails[:-1]:
                agreed = min(agreed, common_prefix(other, tails[-1]))
            self.stable.extend(tails[-1][:agreed])
        return Agreement(tuple(self.stable), tuple(self._tail(words)))

    def _tail(self, words: list[str]) -> list[str]:
        """Words of `words` after the stable prefix (aligned by position)."""
        k = len(self.stable)
        if common_prefix(self.stable, words) == k:
            return words[k:]
        # The new hypothesis rewrote stable words: keep the stable ones, show the rest after
        # the best alignment of its end with the last stable word.
        last = normalize_word(self.stable[-1]) if self.stable else ""
        for i in range(min(len(words), k + 3) - 1, -1, -1):
            if normalize_word(words[i]) == last:
                return words[i + 1:]
        return words[k:]
