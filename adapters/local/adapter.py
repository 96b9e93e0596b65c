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
pool (``decode_workers``) and never on the event loop. Scheduling for latency under load
(`adapters.local.models.DecodeScheduler`): each stream has at most one decode in flight;
finals go first, then first partials; later partials run only on a spare slot while no final
is waiting, and merge into one when skipped; finals decode with less effort (narrower beam,
shorter encoder window) when other finals are queued. `send_audio` awaits (backpressure)
when more than a few finals are waiting.

Whisper's encoder normally sees 30 s of (padded) audio per decode; we give it the utterance
plus a margin, at least 10 s for partials and 15 s for finals
(`adapters.local.models._TrimmedWhisperModel`): a short utterance decodes several times faster.

Settings (``AdapterContext.extra``): ``model_dir``, ``compute_type`` ("int8"),
``cpu_threads`` (1), ``decode_workers`` (2), ``download`` (False).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    ModelInfo,
    ModelNotFound,
    ProviderNotConfigured,
    ProviderUnavailable,
    StreamOptions,
)
from adapters.local.models import (
    ENGLISH_ONLY,
    FINAL,
    MODELS,
    DecodeScheduler,
    LoadOptions,
    Ticket,
    Weights,
    locate_weights,
    shared_model,
)
from adapters.local.stream import MAX_PENDING_FINALS, LocalStream
from adapters.local.vad import (
    SAMPLE_RATE,
    VoiceActivitySegmenter,
)

logger = logging.getLogger(__name__)

__all__ = ["LocalAdapter", "LocalStream", "MAX_PENDING_FINALS"]

T = TypeVar("T")

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
        extra = context.extra
        self._model_dir: str | None = extra.get("model_dir")
        self._download = bool(extra.get("download", False))
        workers = max(1, int(extra.get("decode_workers", 2)))
        self._load_options = LoadOptions(
            compute_type=str(extra.get("compute_type", "int8")),
            cpu_threads=max(1, int(extra.get("cpu_threads", 1))),
            workers=workers,
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "local-decode")
        self._scheduler = DecodeScheduler(workers)
        self._finals_in_flight = 0
        self._weights: dict[str, Weights] = {}

    # ---- catalogue --------------------------------------------------------------------------

    def weights(self, name: str) -> Weights:
        if name not in MODELS:
            raise ModelNotFound(f"unknown model {PROVIDER}.{name}", provider=PROVIDER)
        found = self._weights.get(name)
        if found is None or not found.available:
            found = locate_weights(name, self._model_dir, self._download)
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
        weights = self._available_weights(name)
        try:
            return await asyncio.to_thread(shared_model, weights, self._load_options)
        except Exception as exc:  # noqa: BLE001 - a broken model dir or failed download
            logger.error("local.%s: cannot load (%s): %s", name, weights.source, exc)
            raise ProviderUnavailable(f"cannot load local.{name} from {weights.source}: {exc}",
                                      provider=PROVIDER) from exc

    async def warmup(self, model: str) -> None:
        """Load `model` (and the VAD) ahead of the first session; called at startup."""
        await self.load(model)
        await asyncio.to_thread(VoiceActivitySegmenter)

    def ticket(self, priority: int) -> Ticket:
        """A request for a decode slot (`FINAL` or `PARTIAL` priority)."""
        return self._scheduler.ticket(priority)

    async def acquire(self, ticket: Ticket) -> None:
        await self._scheduler.acquire(ticket)

    def try_acquire(self) -> bool:
        """A free slot now, or False (nothing waits)."""
        return self._scheduler.try_acquire()

    def try_acquire_for_partial(self) -> bool:
        """A slot for a later partial: only while no final is decoding or waiting (the
        threads share the CPU, so a partial next to a final slows the final down), and
        leaving one slot free for the next final."""
        if self.other_finals():
            return False
        return self._scheduler.try_acquire(reserve=1 if self._scheduler.slots > 1 else 0)

    def other_finals(self) -> int:
        """Finals decoding or waiting for a slot (call while holding the slot for ours)."""
        return self._finals_in_flight + self._scheduler.waiting(FINAL)

    async def wait_released(self) -> None:
        await self._scheduler.wait_released()

    def release(self) -> None:
        self._scheduler.release()

    async def decode_in_slot(self, fn: Callable[[], T], *, final: bool = False) -> T:
        """Run `fn` in the pool on a slot already acquired; the slot is freed when the
        thread is really done, even if our await is cancelled."""
        loop = asyncio.get_running_loop()
        try:
            future = self._pool.submit(fn)
        except BaseException:
            self._scheduler.release()
            raise
        self._finals_in_flight += final

        def released() -> None:
            self._finals_in_flight -= final
            self._scheduler.release()

        def done(_: object) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(released)

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    async def run_decode(self, priority: int, fn: Callable[[], T]) -> T:
        """Run `fn` in the decode pool once the scheduler grants a slot."""
        await self.acquire(self.ticket(priority))
        return await self.decode_in_slot(fn, final=priority == FINAL)

    # ---- streams ----------------------------------------------------------------------------

    def open_stream(self, model: str, options: StreamOptions) -> LocalStream:
        if model not in MODELS:
            raise ModelNotFound(f"unknown model {PROVIDER}.{model}", provider=PROVIDER)
        self._available_weights(model)
        return LocalStream(self, model, options)

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
