"""The replay buffer and the time shift of `adapters.fallback` (what a switch replays, and
how a later stream's results are put in session terms)."""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field

from adapters.base import BYTES_PER_SAMPLE, Transcript

EPSILON = 1e-6  # seconds: times compared with this slack (float sums of chunk durations)


@dataclass
class ReplayBuffer:
    """Input audio since the last final, at most `max_seconds` (the oldest goes first)."""

    max_seconds: float
    rate: int
    chunks: deque[tuple[float, bytes]] = field(default_factory=deque)  # (start, pcm)
    seconds: float = 0.0

    def _duration(self, pcm: bytes) -> float:
        return len(pcm) / (BYTES_PER_SAMPLE * self.rate)

    def add(self, start: float, pcm: bytes) -> None:
        self.chunks.append((start, pcm))
        self.seconds += self._duration(pcm)
        while self.chunks and self.seconds > self.max_seconds + EPSILON:
            self.seconds -= self._duration(self.chunks.popleft()[1])

    def drop_before(self, time_s: float) -> None:
        """Forget audio that ends before `time_s` (a final covers it)."""
        while self.chunks:
            start, pcm = self.chunks[0]
            if start + self._duration(pcm) > time_s + EPSILON:
                break
            self.chunks.popleft()
            self.seconds -= self._duration(pcm)

    def start(self, default: float) -> float:
        return self.chunks[0][0] if self.chunks else default


def shift_transcript(event: Transcript, offset: float, prefix: str) -> Transcript:
    """`event` in session time with its segment id prefixed."""
    if offset == 0.0 and not prefix:
        return event
    words = tuple(dataclasses.replace(w, start=round(w.start + offset, 3),
                                      end=round(w.end + offset, 3)) for w in event.words)
    return dataclasses.replace(event, segment_id=prefix + event.segment_id,
                               start=round(event.start + offset, 3),
                               end=round(event.end + offset, 3), words=words)
