"""OpenAI realtime models without server-side turn detection (``gpt-live-transcribe``,
``gpt-realtime-whisper``): the gateway detects the turns and commits each one.

Both take ``turn_detection: null`` (https://developers.openai.com/api/docs/guides/
realtime-transcription): without a commit, ``gpt-live-transcribe`` transcribes nothing and
``gpt-realtime-whisper`` streams deltas but completes nothing until the session ends, so a
text/json client would see no final before then. This stream runs the local engine's Silero
VAD (`adapters.local.vad.VoiceActivitySegmenter`, as the segmented providers do) on the
16 kHz audio and sends ``input_audio_buffer.commit`` when a pause closes an utterance; each
commit's ``completed`` transcription is one final, timed by the VAD. Everything else (24 kHz
resampling, commit bookkeeping, the end of stream) is `RealtimeStream`'s.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from adapters.base import (
    CANONICAL_SAMPLE_RATE,
    AdapterContext,
    ProviderProtocolError,
    SpeechStarted,
    StreamOptions,
    UtteranceEnd,
)
from adapters.local.vad import SpeechEnd, SpeechStart, Utterance, VoiceActivitySegmenter
from adapters.openai import MIN_COMMIT_SECONDS, RealtimeStream


class TurnCommitStream(RealtimeStream):
    """A `RealtimeStream` whose commits come from our VAD instead of the server's."""

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext) -> None:
        super().__init__(model, options, context)
        self._vad = VoiceActivitySegmenter()
        # (start, end) in seconds of each utterance we committed, waiting for its `committed`.
        self._spans: deque[tuple[float, float]] = deque(maxlen=64)
        self._span_start: float | None = None
        # Seconds appended when each commit went out: what is uncommitted once it is answered
        # (RealtimeStream's answer resets the count to 0, forgetting audio sent meanwhile).
        self._marks: deque[float] = deque(maxlen=64)

    async def _start(self) -> None:
        if self.options.sample_rate != CANONICAL_SAMPLE_RATE:
            raise ProviderProtocolError(
                f"expects {CANONICAL_SAMPLE_RATE} Hz audio (for its voice activity detection), "
                f"got {self.options.sample_rate}", provider=self.provider)
        await super()._start()

    async def _send_audio(self, pcm: bytes) -> None:
        await super()._send_audio(pcm)
        await self._on_vad(self._vad.feed(pcm), commit=True)

    async def _finalize(self) -> None:
        # The cut closes the open utterance; RealtimeStream's finalize commits it.
        await self._on_vad(self._vad.cut(), commit=False)
        await super()._finalize()

    async def _close_stream(self) -> None:
        await self._on_vad(self._vad.flush(), commit=False)
        await super()._close_stream()

    async def _on_vad(self, events: list[Any], *, commit: bool) -> None:
        rate = CANONICAL_SAMPLE_RATE
        for event in events:
            if isinstance(event, SpeechStart):
                await self._emit(SpeechStarted(round(event.sample / rate, 3)))
            elif isinstance(event, SpeechEnd):
                await self._emit(UtteranceEnd(round(event.sample / rate, 3)))
            elif isinstance(event, Utterance):
                self._span_start = self._span_start if self._span_start is not None else (
                    event.start / rate)
                span = (round(self._span_start, 3), round(event.end / rate, 3))
                if self._uncommitted < MIN_COMMIT_SECONDS:
                    continue  # too short to commit: the next commit covers it too
                self._spans.append(span)
                self._span_start = None
                if commit:  # else RealtimeStream's finalize / close sends this commit
                    await self._commit()

    async def _commit(self) -> None:
        if self._uncommitted >= MIN_COMMIT_SECONDS:
            self._marks.append(self._sent)
        await super()._commit()

    async def _on_message(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        answered = None
        if kind == "input_audio_buffer.committed":
            if self._spans:
                start, end = self._spans.popleft()
                item = self._item(str(event.get("item_id") or ""))
                item["start"], item["end"] = start, end
            answered = self._marks.popleft() if self._marks else None
        elif kind == "error" and (event.get("error") or {}).get(
                "code") == "input_audio_buffer_commit_empty":
            if self._spans:
                self._spans.pop()  # that commit found nothing new: no item for its span
            if self._marks:
                self._marks.pop()
        await super()._on_message(event)
        if answered is not None:
            self._uncommitted = max(0.0, self._sent - answered)
