"""`LocalStream`: one live stream on the local engine (see `adapters.local.adapter`).

Input side (`send_audio`, `finalize`, `close_stream`): the VAD segmenter runs in a worker
thread; its events become `SpeechStarted` and jobs for the decoder task (a final per closed
utterance, then `Finalized` or the end). Decoder task: one decode in flight at a time, in this
order of preference: queued finals; a speculative final while the speaker pauses; the first
partial of an utterance; later partials (only on a free slot, merged when the pool is busy).
Every decode goes through the `LocalEngine` the stream was opened with (slots, pool, model).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from adapters.base import (
    Finalized,
    ProviderError,
    ProviderUnavailable,
    SpeechStarted,
    StreamOptions,
    SttStream,
    Transcript,
    UtteranceEnd,
)
from adapters.local.agreement import LocalAgreement
from adapters.local.decode import (
    DecodeSettings,
    decode_final,
    decode_partial,
    final_effort,
)
from adapters.local.engine import FINAL, FIRST_PARTIAL, LocalEngine, Ticket
from adapters.local.models import Weights
from adapters.local.vad import (
    SAMPLE_RATE,
    SpeechEnd,
    SpeechStart,
    Utterance,
    VadEvent,
    VoiceActivitySegmenter,
)

logger = logging.getLogger(__name__)

PROVIDER = "local"
PARTIAL_STEP_S = 0.5  # re-decode the open utterance after this much new audio
FIRST_PARTIAL_S = 0.45  # first partial once this much speech is in
MAX_PENDING_FINALS = 4  # send_audio waits beyond this many undecoded utterances


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

    def _map_exception(self, exc: Exception) -> ProviderError | None:
        """The decoder (CTranslate2, onnxruntime) reports its failures, out of memory among
        them, as RuntimeError: an engine failure, not a bug in this module."""
        if isinstance(exc, RuntimeError | MemoryError):
            return ProviderUnavailable(f"local engine failed: {type(exc).__name__}: {exc}",
                                       provider=self.provider)
        return super()._map_exception(exc)

    def __init__(self, engine: LocalEngine, weights: Weights, options: StreamOptions) -> None:
        super().__init__(weights.name, options)
        self._engine = engine
        self._weights = weights
        self._whisper: Any = None
        self._segmenter: VoiceActivitySegmenter | None = None
        self._id = uuid.uuid4().hex[:8]
        self._counter = 0
        self._jobs: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever the decoder finishes a job
        self._input_lock = asyncio.Lock()
        self._odd_byte = b""
        self._ticket: Ticket | None = None
        # The open utterance: its segment id, agreement state, audio length at last partial.
        self._open_id: str | None = None
        self._agreement = LocalAgreement()
        self._partial_at = 0
        self._partials_sent: dict[str, str] = {}  # segment id -> text of its last partial
        # What the decoder may look at: taken on the loop after each VAD step, since the
        # segmenter itself runs in a worker thread. Arrays are views the segmenter never
        # writes to again (it only concatenates and slices).
        self._open: tuple[int, np.ndarray] | None = None
        self._onset: int | None = None
        self._pending: Utterance | None = None
        self._speculation: tuple[tuple[int, int], Transcript | None] | None = None
        self._settings = DecodeSettings.from_options(options)
        self._utt_language: str | None = self._settings.language
        self._busy = False

    # ---- SttStream ----------------------------------------------------------------------------

    async def _start(self) -> None:
        self._whisper = await self._engine.load(self._weights)
        self._segmenter = await asyncio.to_thread(VoiceActivitySegmenter)
        self._spawn(self._decoder(), "decoder")

    async def _send_audio(self, pcm: bytes) -> None:
        async with self._input_lock:
            # A chunk may split a sample: keep the odd byte for the next one.
            data = self._odd_byte + pcm
            cut = len(data) - len(data) % 2
            self._odd_byte, data = data[cut:], data[:cut]
            events = await self._segment(lambda seg: seg.feed(data))
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
        segmenter = self._segmenter
        assert segmenter is not None
        self._open = segmenter.open_utterance()
        self._onset = segmenter.onset()
        self._pending = segmenter.pending_utterance()
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
        if not self.options.interim_results or self._open is None or self._onset is None:
            return False
        if self._pending is not None:
            return False  # the speaker is pausing: nothing new to show
        start, audio = self._open
        spoken = start + len(audio) - self._onset
        if self._partial_at == 0:
            return spoken >= FIRST_PARTIAL_S * SAMPLE_RATE
        return len(audio) - self._partial_at >= PARTIAL_STEP_S * SAMPLE_RATE

    def _speculation_due(self) -> bool:
        pending = self._pending
        if pending is None:
            return False
        key = (pending.start, pending.end)
        return self._speculation is None or self._speculation[0] != key

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing decoding and no partial due (tests use it for pacing)."""
        return (not self._jobs and not self._busy and not self._partial_due()
                and not self._speculation_due())

    async def wait_idle(self) -> None:
        """Wait until the decoder has caught up with the audio sent so far."""
        while not self.idle and not self._ended:
            self._progress.clear()
            await self._progress.wait()

    async def _decoder(self) -> None:
        try:
            await self._decode_loop()
        finally:
            # Also on failure: release anyone waiting in send_audio or wait_idle.
            self._progress.set()

    async def _decode_loop(self) -> None:
        while not self._ended:
            if self._jobs:
                self._busy = True
                try:
                    await self._run_job(self._jobs.popleft())
                finally:
                    self._busy = False
                    self._progress.set()
                continue
            if self._speculation_due() or self._partial_due():
                self._busy = True
                try:
                    if self._speculation_due():
                        await self._speculate()
                    else:
                        await self._run_partial()
                finally:
                    self._busy = False
                    self._progress.set()
                continue
            self._progress.set()
            self._wake.clear()
            await self._wake.wait()

    async def _run_job(self, job: _Job, holding: bool = False) -> None:
        """Do one job; `holding`: we already hold a decode slot (from a raised ticket)."""
        if job.kind == "final":
            await self._final(job, holding)
            return
        if holding:
            self._engine.release()
        if job.kind == "finalized":
            await self._emit(Finalized())
        else:
            self._finish()

    async def _final(self, job: _Job, holding: bool = False) -> None:
        utt = job.utterance
        assert utt is not None
        offset = utt.start / SAMPLE_RATE
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation[0] == (utt.start, utt.end) and (
                speculation[1] is not None and speculation[1].segment_id == job.segment_id):
            transcript = speculation[1]  # decoded while the pause was being confirmed
            if holding:
                self._engine.release()
        else:
            engine = self._engine
            if not holding:
                await engine.acquire(engine.ticket(FINAL))
            effort = final_effort(engine.other_finals())
            transcript = await engine.decode_in_slot(functools.partial(
                decode_final, self._whisper, utt.audio, offset, job.segment_id,
                self._settings, effort), final=True)
        # A final replaces the partials shown; an utterance that decoded to nothing (a
        # cough the VAD took for speech) and showed nothing stays silent.
        if transcript.text or job.segment_id in self._partials_sent:
            await self._emit(transcript)
            if job.speech_end is not None:
                await self._emit(UtteranceEnd(job.speech_end))
        self._partials_sent.pop(job.segment_id, None)

    async def _wait_for_change(self) -> None:
        """Until a decode slot is released or new audio (or a job) arrives."""
        self._wake.clear()
        released = asyncio.ensure_future(self._engine.wait_released())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({released, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            woken.cancel()

    async def _speculate(self) -> None:
        """Decode the final of an utterance whose speaker has paused, before VAD confirms
        the end of speech (``min_silence_ms``): saves that wait on the final's latency.

        The audio is exactly the `Utterance` the VAD will emit if the pause holds; if
        speech resumes instead, the result is dropped.
        """
        pending = self._pending
        assert pending is not None
        if not self._engine.try_acquire():
            await self._wait_for_change()  # spare capacity only; the real final will come
            return
        key = (pending.start, pending.end)
        self._speculation = (key, None)
        segment_id = self._segment_id()
        effort = final_effort(self._engine.other_finals())
        transcript = await self._engine.decode_in_slot(functools.partial(
            decode_final, self._whisper, pending.audio, pending.start / SAMPLE_RATE,
            segment_id, self._settings, effort), final=True)
        if self._speculation is not None and self._speculation[0] == key:
            self._speculation = (key, transcript)

    async def _run_partial(self) -> None:
        engine = self._engine
        if self._partial_at:
            # A later partial: only on a free slot; else skip, and retry with newer audio.
            if not engine.try_acquire_for_partial():
                await self._wait_for_change()
                return
        else:
            self._ticket = ticket = engine.ticket(FIRST_PARTIAL)
            try:
                await engine.acquire(ticket)
            finally:
                self._ticket = None
        # We hold a slot. A final that came meanwhile raised our ticket: it uses the slot.
        if self._jobs:
            await self._run_job(self._jobs.popleft(), holding=True)
            return
        current = self._open
        if current is None:
            engine.release()
            return
        start, audio = current
        self._partial_at = len(audio)
        segment_id = self._segment_id()
        settings = self._settings.with_language(self._utt_language)
        words, language = await engine.decode_in_slot(functools.partial(
            decode_partial, self._whisper, audio, settings))
        if self._open_id != segment_id or not words:
            return  # the utterance closed while we decoded; its final is on the way
        self._utt_language = self._utt_language or language
        agreement = self._agreement.update(words)
        if self._partials_sent.get(segment_id) == agreement.text:
            return  # nothing new to show
        self._partials_sent[segment_id] = agreement.text
        logger.debug("partial %s agreed %r", segment_id, agreement.stable)
        await self._emit(Transcript(
            segment_id=segment_id, is_final=False, text=agreement.text,
            start=start / SAMPLE_RATE, end=(start + len(audio)) / SAMPLE_RATE,
            language=language or self._settings.language))
