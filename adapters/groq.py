"""Groq Whisper (``whisper-large-v3``, ``whisper-large-v3-turbo``): batch only, segmented.

Groq has no streaming API; `SegmentedStream` cuts the audio at voice-activity boundaries and
POSTs each utterance to Groq's OpenAI-compatible ``/audio/transcriptions``
(https://console.groq.com/docs/speech-to-text), one final per utterance.
"""

from __future__ import annotations

from adapters._http import HttpAdapter
from adapters._segmented import SegmentedStream
from adapters.base import Capabilities, StreamOptions

PROVIDER = "groq"

_WHISPER = Capabilities(streaming=False, interim_results=False, word_timestamps=True,
                        language_detection=True, initial_prompt=True, temperature=True)
MODELS: dict[str, tuple[str, Capabilities]] = {
    "whisper-large-v3": ("Groq Whisper Large v3", _WHISPER),
    "whisper-large-v3-turbo": ("Groq Whisper Large v3 Turbo", _WHISPER),
}


class GroqAdapter(HttpAdapter):
    provider = PROVIDER
    credential_env = "GROQ_API_KEY"
    catalogue = MODELS


    def open_stream(self, model: str, options: StreamOptions) -> SegmentedStream:
        self.capabilities(model)
        merge_wait = self.context.merge_wait
        if merge_wait > 0:  # Groq bills each request as >= 10 s (adapters/_merging.py)
            from adapters._merging import MergingSegmentedStream

            return MergingSegmentedStream(
                model, options, self.context, provider=PROVIDER, merge_wait=merge_wait,
                base_url=self.context.base_url or "https://api.groq.com/openai/v1",
                http=self.http)
        return SegmentedStream(model, options, self.context, provider=PROVIDER,
                               base_url=self.context.base_url or "https://api.groq.com/openai/v1",
                               http=self.http)
