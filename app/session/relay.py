"""The relay rules: which provider events reach the client, and how.

- a final is delivered exactly once per segment id (a provider repeating one, or a partial
  arriving after its final, is dropped);
- an empty final is delivered only if partials of its segment were shown (it clears them);
- partials only when the client asked for interim results, and never empty ones;
- provider warnings become session warnings; provider usage reports are not relayed.

Times and segment ids arrive already in session terms (`adapters.fallback` shifts the streams
that follow a switch).
"""

from __future__ import annotations

import logging
import time

from adapters import base as ab
from app.session.events import SessionEvent, SessionWarning

logger = logging.getLogger(__name__)


class Relay:
    def __init__(self, *, interim_results: bool) -> None:
        self.interim_results = interim_results
        self._finals: set[str] = set()
        self._partial_ids: set[str] = set()
        self.first_audio: float | None = None  # monotonic time of the first client audio
        self.first_result_ms: float | None = None
        self.last_final_at: float | None = None

    def __call__(self, event: ab.StreamEvent) -> SessionEvent | None:
        """The event to deliver for `event`, or None."""
        if isinstance(event, ab.Transcript):
            return self._transcript(event)
        if isinstance(event, ab.ProviderWarning):
            return SessionWarning(event.code, event.message)
        if isinstance(event, ab.ProviderUsage):
            return None  # informational; billing uses the audio we sent
        return event

    def _transcript(self, event: ab.Transcript) -> ab.Transcript | None:
        seg = event.segment_id
        if seg in self._finals:
            logger.debug("dropped repeated final/partial %s", seg)
            return None
        now = time.monotonic()
        if event.is_final:
            if not event.text and seg not in self._partial_ids:
                return None  # nothing was said and nothing shown: no final needed
            self._finals.add(seg)
            self._partial_ids.discard(seg)
            self.last_final_at = now
        else:
            if not self.interim_results or not event.text:
                return None
            self._partial_ids.add(seg)
        if self.first_result_ms is None and self.first_audio is not None:
            self.first_result_ms = (now - self.first_audio) * 1000
        return event
