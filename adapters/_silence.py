"""Keepalive by silence, for providers with no keepalive message (ElevenLabs, Deepgram Flux):
while the client is silent the adapter sends digital silence, and `SilenceClock` takes it back
out of the provider's timestamps, so times stay those of the audio the client sent."""

from __future__ import annotations


class SilenceClock:
    """Maps provider time (which includes our keepalive silence) back to stream time."""

    def __init__(self) -> None:
        self.provider_seconds = 0.0
        self._inserted: list[tuple[float, float]] = []  # (provider time, seconds inserted)

    def advance(self, seconds: float, *, inserted: bool = False) -> None:
        if inserted:
            self._inserted.append((self.provider_seconds, seconds))
        self.provider_seconds += seconds

    def to_stream(self, t: float) -> float:
        shift = 0.0
        for at, seconds in self._inserted:
            if at >= t:
                break
            shift += min(seconds, t - at)
        return round(t - shift, 3)
