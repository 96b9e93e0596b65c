"""The built-in local engine: faster-whisper (CTranslate2) on the gateway's own CPU.

`LocalAdapter` offers the Whisper family (``local.tiny.en`` ships with the gateway, others
when their weights are here); `LocalStream` turns a live 16 kHz stream into partials and
finals:

* Silero VAD (`adapters.vad`) finds speech; each utterance ends at ~400 ms of silence, at
  20 s (cut at its quietest point), on `finalize`, or on `close_stream`.
* While an utterance is open it is re-decoded about every 0.5 s of new audio (greedy, no
  timestamps); `adapters.agreement` keeps the start of the partial text from jittering.
* At its end it is decoded once more with word timestamps into the final, which shares the
  partials' ``segment_id``.

One model instance per process is shared by every stream; decodes run in a bounded thread
pool (``decode_workers``) and never on the event loop. Each stream has at most one decode in
flight, finals go before partials, and partials skipped while the pool is busy merge into
the next one, so streams stay real time under load; `send_audio` awaits (backpressure) when
finals pile up.

Settings (``AdapterContext.extra``): ``model_dir``, ``compute_type`` ("int8"),
``cpu_threads`` (1), ``decode_workers`` (2), ``download`` (False).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from adapters.agreement import LocalAgreement
from adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    Finalized,
    ModelInfo,
    ModelNotFound,
    ProviderNotConfigured,
    SpeechStarted,
    StreamOptions,
    SttStream,
    Transcript,
    UtteranceEnd,
)
from adapters.local_decode import DecodeSettings, decode_final, decode_partial
from adapters.local_models import (
    ENGLISH_ONLY,
    FINAL,
    MODELS,
    PARTIAL,
    DecodeScheduler,
    LoadOptions,
    Ticket,
    Weights,
    locate_weights,
    shared_model,
)
from adapters.vad import (
    SAMPLE_RATE,
    SpeechEnd,
    SpeechStart,
    Utterance,
    VadEvent,
    VoiceActivitySegmenter,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

PROVIDER = "local"
PARTIAL_STEP_S = 0.5  # re-decode the open utterance after this much new audio
FIRST_PARTIAL_S = 0.45  # first partial once this much speech is in
MAX_PENDING_FINALS = 4  # send_audio waits beyond this many undecoded utterances


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
        return await asyncio.to_thread(shared_model, weights, self._load_options)

    async def warmup(self, model: str) -> None:
        """Load `model` (and the VAD) ahead of the first session; called at startup."""
        await self.load(model)
        await asyncio.to_thread(VoiceActivitySegmenter)

    def ticket(self, priority: int) -> Ticket:
        """A request for a decode slot (`FINAL` or `PARTIAL` priority)."""
        return self._scheduler.ticket(priority)

    async def acquire(self, ticket: Ticket) -> None:
        await self._scheduler.acquire(ticket)

    def release(self) -> None:
        self._scheduler.release()

    async def decode_in_slot(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the pool on a slot already acquired; the slot is freed when the
        thread is really done, even if our await is cancelled."""
        loop = asyncio.get_running_loop()
        try:
            future = self._pool.submit(fn)
        except BaseException:
            self._scheduler.release()
            raise

        def done(_: object) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._scheduler.release)

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    async def run_decode(self, priority: int, fn: Callable[[], T]) -> T:
        """Run `fn` in the decode pool once the scheduler grants a slot."""
        await self.acquire(self.ticket(priority))
        return await self.decode_in_slot(fn)

    # ---- streams ----------------------------------------------------------------------------

    def open_stream(self, model: str, options: StreamOptions) -> LocalStream:
        if model not in MODELS:
            raise ModelNotFound(f"unknown model {PROVIDER}.{model}", provider=PROVIDER)
        self._available_weights(model)
        return LocalStream(self, model, options)

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(slots=True)
class _Job:
    """Work for the decoder task, in order: a final, a `Finalized` ack, or the end."""

    kind: str  # "final" | "finalized" | "end"
    segment_id: str = ""
    utterance: Utterance | None = None
    speech_end: float | None = None  # speech ended here: UtteranceEnd after the final


class LocalStream(SttStream):
    """A live stream on the local engine (16 kHz s16le in; see the module docstring)."""

    provider = PROVIDER

    def __init__(self, adapter: LocalAdapter, model: str, options: StreamOptions) -> None:
        super().__init__(model, options)
        self._adapter = adapter
        self._whisper: Any = None
        self._segmenter: VoiceActivitySegmenter | None = None
        self._id = uuid.uuid4().hex[:8]
        self._counter = 0
        self._jobs: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever the decoder finishes a job
        self._input_lock = asyncio.Lock()
        self._ticket: Ticket | None = None
        # The open utterance: its segment id, agreement state, audio length at last partial.
        self._open_id: str | None = None
        self._agreement = LocalAgreement()
        self._partial_at = 0
        self._partials_sent: set[str] = set()
        self._settings = DecodeSettings.from_options(options)
        self._utt_language: str | None = self._settings.language
        self._busy = False

    # ---- SttStream ----------------------------------------------------------------------------

    async def _start(self) -> None:
        self._whisper = await self._adapter.load(self.model)
        self._segmenter = await asyncio.to_thread(VoiceActivitySegmenter)
        self._spawn(self._decoder(), "decoder")

    async def _send_audio(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            raise ValueError("PCM chunk of odd length")  # the gateway keeps odd bytes back
        async with self._input_lock:
            events = await self._segment(lambda seg: seg.feed(pcm))
            await self._handle(events)
        # Backpressure: a slow decoder stops our reads instead of letting audio pile up.
        while len(self._jobs) > MAX_PENDING_FINALS and not self._ended:
            self._progress.clear()
            await self._progress.wait()

    async def _finalize(self) -> None:
        async with self._input_lock:
            await self._handle(await self._segment(lambda seg: seg.cut()))
            self._queue(_Job("finalized"))

    async def _close_stream(self) -> None:
        async with self._input_lock:
            await self._handle(await self._segment(lambda seg: seg.flush()))
            self._queue(_Job("end"))

    async def _shutdown(self) -> None:
        self._jobs.clear()
        self._wake.set()
        self._progress.set()

    # ---- input side ---------------------------------------------------------------------------

    async def _segment(self, step: Callable[[VoiceActivitySegmenter], list[VadEvent]]
                       ) -> list[VadEvent]:
        segmenter = self._segmenter
        if segmenter is None:
            raise RuntimeError("stream not started")
        # The ONNX VAD is cheap (~0.1 ms per 32-ms window) but a burst of seconds of audio
        # is not: run it off the loop.
        return await asyncio.to_thread(step, segmenter)

    async def _handle(self, events: list[VadEvent]) -> None:
        speech_end: float | None = None
        for event in events:
            if isinstance(event, SpeechStart):
                await self._emit(SpeechStarted(event.sample / SAMPLE_RATE))
            elif isinstance(event, SpeechEnd):
                speech_end = event.sample / SAMPLE_RATE
            elif isinstance(event, Utterance):
                job = _Job("final", self._segment_id(), event, speech_end)
                speech_end = None
                self._open_id = None
                self._agreement = LocalAgreement()
                self._partial_at = 0
                self._utt_language = self._settings.language
                self._queue(job)
        self._wake.set()

    def _segment_id(self) -> str:
        if self._open_id is None:
            self._counter += 1
            self._open_id = f"{self._id}-{self._counter}"
        return self._open_id

    def _queue(self, job: _Job) -> None:
        self._jobs.append(job)
        if self._ticket is not None:
            self._ticket.priority = FINAL  # a waiting partial slot now serves this final
        self._wake.set()

    # ---- decoder task -------------------------------------------------------------------------

    def _partial_due(self) -> bool:
        if not self.options.interim_results or self._segmenter is None:
            return False
        current = self._segmenter.open_utterance()
        onset = self._segmenter.onset()
        if current is None or onset is None:
            return False
        start, audio = current
        spoken = start + len(audio) - onset
        if self._partial_at == 0:
            return spoken >= FIRST_PARTIAL_S * SAMPLE_RATE
        return len(audio) - self._partial_at >= PARTIAL_STEP_S * SAMPLE_RATE

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing decoding and no partial due (tests use it for pacing)."""
        return not self._jobs and not self._busy and not self._partial_due()

    async def wait_idle(self) -> None:
        """Wait until the decoder has caught up with the audio sent so far."""
        while not self.idle and not self._ended:
            self._progress.clear()
            await self._progress.wait()

    async def _decoder(self) -> None:
        while True:
            if self._jobs:
                self._busy = True
                try:
                    await self._run_job(self._jobs.popleft())
                finally:
                    self._busy = False
                    self._progress.set()
                if self._ended:
                    return
                continue
            if self._partial_due():
                self._busy = True
                try:
                    await self._run_partial()
                finally:
                    self._busy = False
                    self._progress.set()
                continue
            self._progress.set()
            self._wake.clear()
            await self._wake.wait()

    async def _run_job(self, job: _Job) -> None:
        if job.kind == "finalized":
            await self._emit(Finalized())
        elif job.kind == "end":
            self._finish()
        else:
            await self._final(job)

    async def _final(self, job: _Job) -> None:
        utt = job.utterance
        assert utt is not None
        offset = utt.start / SAMPLE_RATE
        transcript = await self._adapter.run_decode(FINAL, functools.partial(
            decode_final, self._whisper, utt.audio, offset, job.segment_id, self._settings))
        if transcript.text or job.segment_id in self._partials_sent:
            await self._emit(transcript)
        self._partials_sent.discard(job.segment_id)
        if job.speech_end is not None:
            await self._emit(UtteranceEnd(job.speech_end))

    async def _run_partial(self) -> None:
        adapter = self._adapter
        self._ticket = ticket = adapter.ticket(PARTIAL)
        try:
            await adapter.acquire(ticket)
        finally:
            self._ticket = None
        # We hold a slot. A final that came meanwhile raised our ticket: it goes first.
        current = self._segmenter.open_utterance() if self._segmenter else None
        if self._jobs or current is None:
            adapter.release()
            return
        start, audio = current
        audio = audio.copy()
        self._partial_at = len(audio)
        segment_id = self._segment_id()
        settings = self._settings.with_language(self._utt_language)
        words, language = await adapter.decode_in_slot(functools.partial(
            decode_partial, self._whisper, audio, settings))
        if self._open_id != segment_id or not words:
            return  # the utterance closed while we decoded; its final is on the way
        self._utt_language = self._utt_language or language
        agreement = self._agreement.update(words)
        logger.debug("partial %s agreed %r", segment_id, agreement.stable)
        self._partials_sent.add(segment_id)
        await self._emit(Transcript(
            segment_id=segment_id, is_final=False, text=agreement.text,
            start=start / SAMPLE_RATE, end=(start + len(audio)) / SAMPLE_RATE,
            language=language or self._settings.language))
