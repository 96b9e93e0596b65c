"""Groq Whisper (``whisper-large-v3``, ``whisper-large-v3-turbo``): batch only, segmented.

Groq has no streaming API; `SegmentedStream` cuts the audio at voice-activity boundaries and
POSTs each utterance to Groq's OpenAI-compatible ``/audio/transcriptions``
(https://console.groq.com/docs/speech-to-text), one final per utterance.
"""

from __future__ import annotations

import httpx

from adapters._segmented import SegmentedStream
from adapters.base import Adapter, AdapterContext, Capabilities, ModelInfo, StreamOptions

PROVIDER = "groq"

_WHISPER = Capabilities(streaming=False, interim_results=False, word_timestamps=True,
                        language_detection=True, initial_prompt=True, temperature=True)
MODELS: dict[str, tuple[str, Capabilities]] = {
    "whisper-large-v3": ("Groq Whisper Large v3", _WHISPER),
    "whisper-large-v3-turbo": ("Groq Whisper Large v3 Turbo", _WHISPER),
}


class GroqAdapter(Adapter):
    provider = PROVIDER
    credential_env = "GROQ_API_KEY"

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        self._http: httpx.AsyncClient | None = None

    def models(self) -> list[ModelInfo]:
        reason = self.unavailable_reason()
        return [ModelInfo(f"{PROVIDER}.{name}", PROVIDER, name, title, caps,
                          available=reason is None, unavailable_reason=reason)
                for name, (title, caps) in MODELS.items()]

    def open_stream(self, model: str, options: StreamOptions) -> SegmentedStream:
        self.capabilities(model)
        if self._http is None:
            self._http = httpx.AsyncClient()
        return SegmentedStream(model, options, self.context, provider=PROVIDER,
                               base_url=self.context.base_url or "https://api.groq.com/openai/v1",
                               http=self._http)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
