"""Cost-aware segmented uploads: merge short utterances into one request (Groq).

Groq bills every transcription request as at least 10 s of audio
(https://console.groq.com/docs/speech-to-text, "minimum billed length"), so a conversation of
2-second utterances costs five times its length when each is uploaded alone. This stream holds
a closed utterance for at most ``merge_wait`` seconds: utterances that close meanwhile join it
as long as the merged stretch (the real audio between them included, so word times stay exact)
stays within `MIN_BILLED_SECONDS`; then, or when the wait runs out, or on finalize / end of
stream, the stretch is uploaded as one request and becomes one final. The price: a final can
come up to ``merge_wait`` seconds later (docs/providers.md states the trade-off).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from adapters._segmented import SegmentedStream, _Job
from adapters.base import (
    CANONICAL_SAMPLE_RATE,
    AdapterContext,
    Finalized,
    SpeechStarted,
    StreamOptions,
    UtteranceEnd,
)
from adapters.local.vad import SpeechEnd, SpeechStart, Utterance, pcm_to_float

MIN_BILLED_SECONDS = 10.0
# Client audio kept to build merged stretches from (bounded: a stretch is at most 10 s).
KEEP_SECONDS = 30.0


@dataclass
class _Pending:
    start: int  # samples
    end: int
    audio: np.ndarray  # float32, used as is when nothing joined it
    merged: int = 1
    utterance_ends: list[UtteranceEnd] = field(default_factory=list)


class MergingSegmentedStream(SegmentedStream):
    def __init__(self, model: str, options: StreamOptions, context: AdapterContext, *,
                 provider: str, base_url: str, http: httpx.AsyncClient,
                 merge_wait: float) -> None:
        super().__init__(model, options, context, provider=provider, base_url=base_url,
                         http=http)
        self.merge_wait = merge_wait
        self._kept = bytearray()  # the last KEEP_SECONDS of client audio
        self._kept_start = 0  # sample index of _kept[0]
        self._pending: _Pending | None = None
        self._generation = 0  # bumps when the pending stretch is taken
        self._lock = asyncio.Lock()

    async def _send_audio(self, pcm: bytes) -> None:
        self._kept += pcm
        excess = len(self._kept) - int(KEEP_SECONDS * CANONICAL_SAMPLE_RATE) * 2
        if excess > 0:
            del self._kept[:excess]
            self._kept_start += excess // 2
        await super()._send_audio(pcm)

    async def _finalize(self) -> None:
        await self._queue_events(self._vad.cut())
        await self._flush_pending()
        await self._queue(Finalized())

    async def _close_stream(self) -> None:
        await self._queue_events(self._vad.flush())
        await self._flush_pending()
        await self._queue(None)

    async def _queue_events(self, events: list[Any]) -> None:
        # The VAD says SpeechEnd before the Utterance it closes; its utterance_end goes out
        # after the final holding that utterance.
        rate = CANONICAL_SAMPLE_RATE
        speech_end: UtteranceEnd | None = None
        for event in events:
            if isinstance(event, SpeechStart):
                await self._emit(SpeechStarted(event.sample / rate))
            elif isinstance(event, SpeechEnd):
                speech_end = UtteranceEnd(event.sample / rate)
            elif isinstance(event, Utterance):
                await self._add(event, speech_end)
                speech_end = None
        if speech_end is not None:
            async with self._lock:
                if self._pending is not None:
                    self._pending.utterance_ends.append(speech_end)
                    return
            await self._queue(speech_end)

    async def _add(self, utterance: Utterance, speech_end: UtteranceEnd | None) -> None:
        limit = int(MIN_BILLED_SECONDS * CANONICAL_SAMPLE_RATE)
        ends = [speech_end] if speech_end is not None else []
        async with self._lock:
            pending = self._pending
            if pending is not None and utterance.end - pending.start <= limit and (
                    pending.start >= self._kept_start):
                pending.end = utterance.end
                pending.merged += 1
                pending.utterance_ends += ends
                return
            if pending is not None:
                await self._put(self._take())
            if utterance.end - utterance.start >= limit:  # long enough to pay for itself
                await self._put(_Pending(utterance.start, utterance.end, utterance.audio,
                                         utterance_ends=ends))
                return
            self._pending = _Pending(utterance.start, utterance.end, utterance.audio,
                                     utterance_ends=ends)
            generation = self._generation
        self._spawn(self._flush_later(generation), "merge-wait")

    async def _flush_later(self, generation: int) -> None:
        await asyncio.sleep(self.merge_wait)
        async with self._lock:
            if self._generation == generation and self._pending is not None:
                await self._put(self._take())

    async def _flush_pending(self) -> None:
        async with self._lock:
            if self._pending is not None:
                await self._put(self._take())

    def _take(self) -> _Pending:
        pending, self._pending = self._pending, None
        assert pending is not None
        self._generation += 1
        return pending

    async def _put(self, pending: _Pending) -> None:
        """Queue the stretch (merged from the kept audio) and the utterance ends it closed."""
        audio = pending.audio
        if pending.merged > 1:
            begin = (pending.start - self._kept_start) * 2
            audio = pcm_to_float(bytes(self._kept[begin:(pending.end - self._kept_start) * 2]))
        await self._queue(_Job(pending.start / CANONICAL_SAMPLE_RATE, audio))
        for end in pending.utterance_ends:
            await self._queue(end)
