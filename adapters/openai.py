"""OpenAI: Realtime transcription sessions (gpt-4o(-mini)-transcribe, gpt-realtime-whisper)
over our own WebSocket, and ``whisper-1`` through the segmented REST path (like Groq).

Realtime protocol: https://platform.openai.com/docs/guides/realtime-transcription (GA shapes:
``session.update`` with ``session.type = "transcription"``). Audio must be PCM at **24 kHz**,
base64 in ``input_audio_buffer.append`` events; the gateway resamples to
`Capabilities.input_sample_rate` and we resample anything else ourselves.
Why not the SDK's ``realtime.connect``: it is sound, but it raises the same ``websockets``
exceptions we map anyway and adds a threaded send queue; our `WebSocketStream` gives one
error boundary and bounded waits for every provider (docs/providers.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import soxr

from adapters._http import HttpAdapter
from adapters._segmented import SegmentedStream, prompt_for
from adapters._ws import WebSocketStream
from adapters.base import (
    BYTES_PER_SAMPLE,
    AdapterContext,
    Capabilities,
    ProviderBadRequest,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUsage,
    ProviderWarning,
    SpeechStarted,
    StreamOptions,
    SttStream,
    Transcript,
    UtteranceEnd,
)

PROVIDER = "openai"
REALTIME_RATE = 24_000  # "Only a 24kHz sample rate is supported" for audio/pcm
MIN_COMMIT_SECONDS = 0.1  # a smaller commit is refused: input_audio_buffer_commit_empty

_REALTIME = Capabilities(word_timestamps=False, language_detection=True, initial_prompt=True,
                         punctuation=False, input_sample_rate=REALTIME_RATE)
MODELS: dict[str, tuple[str, Capabilities]] = {
    "gpt-4o-transcribe": ("OpenAI GPT-4o Transcribe (realtime)", _REALTIME),
    "gpt-4o-mini-transcribe": ("OpenAI GPT-4o mini Transcribe (realtime)", _REALTIME),
    # No server VAD (turn_detection must be null): our VAD commits each turn
    # (adapters/openai_turns.py), on 16 kHz audio; the stream resamples to 24 kHz.
    "gpt-realtime-whisper": ("OpenAI Realtime Whisper", Capabilities(
        word_timestamps=False, language_detection=True, punctuation=False)),
    "gpt-live-transcribe": ("OpenAI GPT Live Transcribe", Capabilities(
        word_timestamps=False, language_detection=True, punctuation=False)),
    "whisper-1": ("OpenAI Whisper (segmented REST)", Capabilities(
        streaming=False, interim_results=False, language_detection=True, initial_prompt=True,
        temperature=True)),
}
REST_MODELS = {"whisper-1"}
NO_SERVER_VAD = {"gpt-realtime-whisper", "gpt-live-transcribe"}


def session_update(model: str, options: StreamOptions) -> dict[str, Any]:
    """The ``session.update`` that configures a transcription-only session."""
    transcription: dict[str, Any] = {"model": model}
    if options.language != "auto":
        transcription["language"] = options.language
    prompt = prompt_for(options)
    if prompt and model not in NO_SERVER_VAD:
        transcription["prompt"] = prompt
    turn_detection = None if model in NO_SERVER_VAD else {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
        "silence_duration_ms": 500}
    return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": REALTIME_RATE},
        "transcription": transcription, "turn_detection": turn_detection,
        "noise_reduction": None}}}}


def error_of(event: dict[str, Any]) -> ProviderError:
    """An ``error`` event -> `ProviderError` (a rejected client option is a bad request)."""
    error = event.get("error") or {}
    code = str(error.get("code") or error.get("type") or "error")
    message = str(error.get("message") or "upstream error")
    if error.get("type") == "server_error":
        return ProviderUnavailable(message, provider=PROVIDER, code=code, retryable=True)
    if "language" in str(error.get("param") or "") or "prompt" in str(error.get("param") or ""):
        return ProviderBadRequest(message, provider=PROVIDER, code=code)
    return ProviderProtocolError(message, provider=PROVIDER, code=code)


class RealtimeStream(WebSocketStream):
    provider = PROVIDER
    stall_window = 10.0  # pongs answer within milliseconds; events only around speech

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext) -> None:
        super().__init__(model, options, context)
        self._resampler = (None if options.sample_rate == REALTIME_RATE else
                           soxr.ResampleStream(options.sample_rate, REALTIME_RATE, 1,
                                               dtype="int16"))
        self._uncommitted = 0.0  # seconds appended since the last commit
        self._sent = 0.0  # seconds appended in all
        # Our commits not yet answered. A `committed` whose item saw no `speech_stopped` answers
        # one of ours; the server VAD's own commits always follow its `speech_stopped`.
        self._manual_commits = 0
        self._pending: set[str] = set()  # committed items not yet transcribed
        self._items: dict[str, dict[str, Any]] = {}
        self._last_end = 0.0
        self._closing = False
        self._usage = 0.0

    async def _start(self) -> None:
        base = (self.context.base_url or "https://api.openai.com/v1").rstrip("/")
        base = "ws" + base.removeprefix("http") if base.startswith("http") else base
        await self._connect(f"{base}/realtime?intent=transcription",
                            {"Authorization": f"Bearer {self.context.api_key}"})
        await self._expect("session.created")
        await self._send_json(session_update(self.model, self.options))
        await self._expect("session.updated")
        self._start_reader()

    async def _expect(self, kind: str) -> None:
        from websockets.exceptions import ConnectionClosed

        assert self._ws is not None
        try:
            async with asyncio.timeout(self.context.connect_timeout):
                while True:
                    event = json.loads(await self._ws.recv())
                    if event.get("type") == "error":
                        raise error_of(event)
                    if event.get("type") == kind:
                        return
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from exc
        except TimeoutError as exc:
            raise ProviderTimeout(f"no {kind}", provider=PROVIDER, retryable=True) from exc

    async def _send_audio(self, pcm: bytes) -> None:
        if self._resampler is not None:
            samples = np.frombuffer(pcm, dtype="<i2")
            pcm = self._resampler.resample_chunk(samples).astype("<i2").tobytes()
        await self._append(pcm)

    async def _append(self, pcm: bytes) -> None:
        if not pcm:
            return
        seconds = len(pcm) / (BYTES_PER_SAMPLE * REALTIME_RATE)
        self._uncommitted += seconds
        self._sent += seconds
        await self._send_json({"type": "input_audio_buffer.append",
                               "audio": base64.b64encode(pcm).decode("ascii")})

    async def _commit(self) -> None:
        if self._uncommitted >= MIN_COMMIT_SECONDS:
            self._manual_commits += 1
            await self._send_json({"type": "input_audio_buffer.commit"})

    async def _finalize(self) -> None:
        self._expect_finalized()
        await self._commit()
        await self._check_done()

    async def _close_stream(self) -> None:
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype="<i2"), last=True)
            await self._append(tail.astype("<i2").tobytes())
        # No terminate message: commit the tail, wait for its transcript, close ourselves.
        self._closing = True
        await self._commit()
        self._begin_flush()
        await self._check_done()

    async def _check_done(self) -> None:
        if self._pending or self._manual_commits:
            return
        await self._finalized()
        if self._closing and not self._ended:
            if self._usage:
                await self._emit(ProviderUsage(self._usage))
            self._finish()
            await self._shutdown()

    async def _on_message(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type"))
        item_id = str(event.get("item_id") or "")
        if kind == "input_audio_buffer.speech_started":
            start = int(event.get("audio_start_ms") or 0) / 1000
            self._items[item_id] = {"start": start, "end": None, "text": ""}
            await self._emit(SpeechStarted(start))
        elif kind == "input_audio_buffer.speech_stopped":
            end = int(event.get("audio_end_ms") or 0) / 1000
            item = self._item(item_id)
            item["end"], item["stopped"] = end, True
            await self._emit(UtteranceEnd(end))
        elif kind == "input_audio_buffer.committed":
            item = self._item(item_id)
            item["end"] = item["end"] if item["end"] is not None else self._sent
            self._pending.add(item_id)
            if not item.get("stopped") and self._manual_commits:
                self._manual_commits -= 1
                self._uncommitted = 0.0
            elif item.get("stopped"):  # the server buffer now starts where speech stopped
                self._uncommitted = min(self._uncommitted, max(0.0, self._sent - item["end"]))
        elif kind == "conversation.item.input_audio_transcription.delta":
            item = self._item(item_id)
            item["text"] += str(event.get("delta") or "")
            if self.options.interim_results and item["text"].strip():
                item["partial"] = True
                await self._emit(self._transcript(item_id, item["text"], is_final=False))
        elif kind == "conversation.item.input_audio_transcription.completed":
            usage = event.get("usage") or {}
            if usage.get("type") == "duration":
                self._usage += float(usage.get("seconds") or 0.0)
            await self._complete(item_id, str(event.get("transcript") or ""))
        elif kind == "conversation.item.input_audio_transcription.failed":
            error = event.get("error") or {}
            await self._emit(ProviderWarning(str(error.get("code") or "transcription_failed"),
                                             str(error.get("message") or "")))
            await self._complete(item_id, self._item(item_id)["text"])
        elif kind == "error":
            error = event.get("error") or {}
            if error.get("code") == "input_audio_buffer_commit_empty":
                self._manual_commits = max(0, self._manual_commits - 1)
                await self._check_done()
            elif error.get("type") == "server_error":
                raise error_of(event)
            else:  # most realtime errors are recoverable; the session stays open
                await self._emit(ProviderWarning(str(error.get("code") or "error"),
                                                 str(error.get("message") or "")))

    def _item(self, item_id: str) -> dict[str, Any]:
        return self._items.setdefault(item_id, {"start": self._last_end, "end": None,
                                                "text": ""})

    async def _complete(self, item_id: str, text: str) -> None:
        item = self._item(item_id)
        if text.strip() or item.get("partial"):
            await self._emit(self._transcript(item_id, text, is_final=True))
        self._items.pop(item_id, None)
        self._pending.discard(item_id)
        await self._check_done()

    def _transcript(self, item_id: str, text: str, *, is_final: bool) -> Transcript:
        item = self._items[item_id]
        end = item["end"] if item["end"] is not None else self._sent
        if is_final:
            self._last_end = max(self._last_end, end)
        return Transcript(segment_id=item_id, is_final=is_final, text=text.strip(),
                          start=item["start"], end=max(end, item["start"]),
                          language=None if self.options.language == "auto"
                          else self.options.language)


class OpenAIAdapter(HttpAdapter):
    provider = PROVIDER
    credential_env = "OPENAI_API_KEY"
    catalogue = MODELS


    def open_stream(self, model: str, options: StreamOptions) -> SttStream:
        self.capabilities(model)
        if model in REST_MODELS:
            return SegmentedStream(model, options, self.context, provider=PROVIDER,
                                   base_url=self.context.base_url or "https://api.openai.com/v1",
                                   http=self.http)
        if model in NO_SERVER_VAD:
            from adapters.openai_turns import TurnCommitStream

            return TurnCommitStream(model, options, self.context)
        return RealtimeStream(model, options, self.context)
