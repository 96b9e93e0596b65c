"""The built-in local engine: faster-whisper (CTranslate2) on the gateway's own CPU.

`LocalAdapter` offers the Whisper family (``local.tiny.en`` ships with the gateway, others
when their weights are here); `LocalStream` turns a live 16 kHz stream into partials and
finals:

* Silero VAD (`adapters.local.vad`) finds speech; each utterance ends at ~400 ms of silence, at
  20 s (cut at its quietest point), on `finalize`, or on `close_stream`.
* While an utterance is open it is re-decoded about every 0.5 s of new audio (greedy, no
  timestamps); `adapters.local.agreement` keeps the start of the partial text from jittering.
* At its end it is decoded once more with word timestamps into the final, which shares the
  partials' ``segment_id``. That decode starts speculatively as soon as the speaker has
  paused for the padding (200 ms) and a slot is free, so VAD's 400-ms confirmation and the
  decode overlap; if speech resumes, the result is dropped.

One model instance per process is shared by every stream; decodes run in a bounded thread
pool (``decode_workers``) and never on the event loop. The adapter owns one `LocalEngine`
(`adapters.local.engine`: model loading, decode scheduler, pool) and hands it to each stream
it opens. Scheduling for latency under load
(`adapters.local.engine.DecodeScheduler`): each stream has at most one decode in flight;
finals go first, then first partials; later partials run only on a spare slot while no final
is waiting, and merge into one when skipped; finals decode with less effort (narrower beam,
shorter encoder window) when other finals are queued. `send_audio` awaits (backpressure)
when more than a few finals are waiting.

Whisper's encoder normally sees 30 s of (padded) audio per decode; we give it the utterance
plus a margin, at least 10 s for partials and 15 s for finals
(`adapters.local.models._TrimmedWhisperModel`): a short utterance decodes several times faster.

Settings: `config.settings.LocalEngineSettings` (``AdapterContext.local``): ``model_dir``,
``compute_type`` ("int8"), ``cpu_threads`` (1), ``decode_workers`` (2), ``download`` (False).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    ModelInfo,
    ModelNotFound,
    ProviderNotConfigured,
    StreamOptions,
)
from adapters.local.engine import LocalEngine
from adapters.local.models import (
    ENGLISH_ONLY,
    MODELS,
    Weights,
    locate_weights,
)
from adapters.local.stream import MAX_PENDING_FINALS, LocalStream
from adapters.local.vad import (
    SAMPLE_RATE,
    VoiceActivitySegmenter,
)
from config.settings import LocalEngineSettings

logger = logging.getLogger(__name__)

__all__ = ["LocalAdapter", "LocalStream", "MAX_PENDING_FINALS"]

PROVIDER = "local"


def _capabilities(name: str) -> Capabilities:
    english = name in ENGLISH_ONLY
    return Capabilities(
        streaming=True,
        interim_results=True,
        word_timestamps=True,
        diarization=False,
        # A vocabulary is only passed to Whisper as prompt text (hotwords): declared
        # honestly as unsupported, so check_options reports it "downgraded" to a prompt.
        custom_vocabulary=False,
        language_detection=not english,
        initial_prompt=True,
        temperature=True,
        punctuation=True,
        languages=("en",) if english else (),
        input_sample_rate=SAMPLE_RATE,
    )


class LocalAdapter(Adapter):
    provider = PROVIDER

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        # faster-whisper logs every transcribe() call at INFO: several lines per second per
        # stream here. Keep its warnings only.
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        self.settings = context.local or LocalEngineSettings()
        self.engine = LocalEngine(self.settings)
        self._weights: dict[str, Weights] = {}

    # ---- catalogue --------------------------------------------------------------------------

    def weights(self, name: str) -> Weights:
        if name not in MODELS:
            raise ModelNotFound(f"unknown model {PROVIDER}.{name}", provider=PROVIDER)
        found = self._weights.get(name)
        if found is None or not found.available:
            found = locate_weights(name, self.settings.model_dir, self.settings.download)
            self._weights[name] = found
        return found

    def models(self) -> list[ModelInfo]:
        infos = []
        for name, (_, display) in MODELS.items():
            weights = self.weights(name)
            infos.append(ModelInfo(
                id=f"{PROVIDER}.{name}", provider=PROVIDER, model=name, display_name=display,
                capabilities=_capabilities(name), available=weights.available,
                unavailable_reason=weights.reason))
        return infos

    def capabilities(self, model: str) -> Capabilities:
        if model not in MODELS:
            raise ModelNotFound(f"unknown model {PROVIDER}.{model}", provider=PROVIDER)
        return _capabilities(model)

    # ---- models and decoding ----------------------------------------------------------------

    def _available_weights(self, name: str) -> Weights:
        weights = self.weights(name)
        if not weights.available:
            raise ProviderNotConfigured(weights.reason or "no weights", provider=PROVIDER)
        return weights

    async def load(self, name: str) -> Any:
        """The shared model instance, loaded in a worker thread on first use."""
        return await self.engine.load(self._available_weights(name))

    async def warmup(self, model: str) -> None:
        """Load `model` (and the VAD) ahead of the first session; called at startup."""
        await self.load(model)
        await asyncio.to_thread(VoiceActivitySegmenter)

    # ---- streams ----------------------------------------------------------------------------

    def open_stream(self, model: str, options: StreamOptions) -> LocalStream:
        if model not in MODELS:
            raise ModelNotFound(f"unknown model {PROVIDER}.{model}", provider=PROVIDER)
        return LocalStream(self.engine, self._available_weights(model), options)

    async def aclose(self) -> None:
        self.engine.close()
