"""Gladia live v2 (``solaria-1``): ``POST /v2/live`` with ``x-gladia-key``, then the returned
WebSocket URL (which carries its own token).

Protocol: https://docs.gladia.io/api-reference/v2/live/init and
https://docs.gladia.io/api-reference/v2/live/websocket. The gladiaio-sdk does not install
from this registry (certifi pin) and its sessions send fire-and-forget with an unbounded
resend buffer (PROVIDERS.md §7.4): we use httpx for the POST and our own WebSocket.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from adapters._http import HttpAdapter
from adapters._ws import WebSocketStream, http_status_error, parse_retry_after
from adapters.base import (
    BYTES_PER_SAMPLE,
    AdapterContext,
    Capabilities,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUsage,
    SpeechStarted,
    StreamOptions,
    Transcript,
    UtteranceEnd,
    Word,
    map_transport_exception,
)
from adapters.errors import provider_message

PROVIDER = "gladia"
ENDPOINTING = 0.3  # seconds of silence that end an utterance
# Gladia has no "finalize now" message: we append this much digital silence so its
# endpointing closes the open utterance, and shift later times back by it.
FINALIZE_SILENCE = ENDPOINTING + 0.2

MODELS: dict[str, tuple[str, Capabilities]] = {
    "solaria-1": ("Gladia Solaria-1", Capabilities(custom_vocabulary=True,
                                                   language_detection=True,
                                                   punctuation=False)),
}


def init_body(model: str, options: StreamOptions) -> dict[str, Any]:
    """The ``POST /v2/live`` body; every ``messages_config`` flag set explicitly."""
    body: dict[str, Any] = {
        "encoding": "wav/pcm", "bit_depth": 16, "sample_rate": options.sample_rate,
        "channels": 1, "model": model, "endpointing": ENDPOINTING,
        "language_config": {
            "languages": [] if options.language == "auto" else [options.language],
            "code_switching": options.language == "auto"},
        "messages_config": {
            "receive_partial_transcripts": True, "receive_final_transcripts": True,
            "receive_speech_events": True, "receive_pre_processing_events": False,
            "receive_realtime_processing_events": False,
            "receive_post_processing_events": False, "receive_acknowledgments": False,
            "receive_errors": True, "receive_lifecycle_events": True},
    }
    if options.custom_vocabulary:
        body["realtime_processing"] = {
            "custom_vocabulary": True,
            "custom_vocabulary_config": {"vocabulary": list(options.custom_vocabulary)}}
    return body


def parse_transcript(message: dict[str, Any]) -> Transcript:
    """A ``transcript`` message -> `Transcript` (times in seconds, provider time)."""
    data = message["data"]
    utterance = data["utterance"]
    words = tuple(Word(word=str(w["word"]).strip(), start=float(w["start"]),
                       end=float(w["end"]),
                       confidence=None if w.get("confidence") is None else float(w["confidence"]))
                  for w in utterance.get("words") or ())
    speaker = utterance.get("speaker")
    return Transcript(
        segment_id=str(data["id"]), is_final=bool(data.get("is_final")),
        text=str(utterance.get("text") or "").strip(), start=float(utterance["start"]),
        end=float(utterance["end"]), words=words,
        confidence=None if utterance.get("confidence") is None
        else float(utterance["confidence"]),
        language=utterance.get("language"), speaker=None if speaker is None else str(speaker))


def close_error(code: int, reason: str) -> ProviderError | None:
    if code in (1000, 1005):
        return None
    message = f"upstream closed: {reason or code}"
    kw: dict[str, Any] = {"provider": PROVIDER, "code": code}
    if code in (1008, 4001, 4401, 4403):
        return ProviderAuthError(message, **kw)
    if code in (1013, 4029, 4429):
        return ProviderRateLimited(message, retryable=True, **kw)
    if code == 4408:
        return ProviderTimeout(message, **kw)
    if 4400 <= code < 4500:  # the SDK treats 44xx as fatal, the rest as retryable
        return ProviderBadRequest(message, **kw)
    return ProviderUnavailable(message, retryable=True, **kw)


class GladiaStream(WebSocketStream):
    provider = PROVIDER
    stall_window = 10.0  # pongs answer within milliseconds; transcripts only during speech

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext,
                 http: httpx.AsyncClient) -> None:
        super().__init__(model, options, context)
        self._http = http
        self._bytes_per_second = options.sample_rate * BYTES_PER_SAMPLE
        self._provider_time = 0.0  # seconds of audio Gladia received, silence included
        self._injected: list[tuple[float, float]] = []  # (provider time, seconds of silence)
        self._finals: set[str] = set()
        self._open: str | None = None  # utterance with partials and no final yet

    async def _start(self) -> None:
        base = (self.context.base_url or "https://api.gladia.io").rstrip("/")
        try:
            response = await self._http.post(
                f"{base}/v2/live", json=init_body(self.model, self.options),
                headers={"x-gladia-key": str(self.context.api_key)},
                timeout=httpx.Timeout(self.context.connect_timeout))
        except httpx.HTTPError as exc:
            mapped = map_transport_exception(exc, PROVIDER)
            if mapped is None:
                raise
            raise mapped from exc
        if not response.is_success:
            raise http_status_error(PROVIDER, response.status_code,
                                    provider_message(response.text),
                                    retry_after=parse_retry_after(
                                        response.headers.get("retry-after")))
        try:
            url = str(response.json()["url"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderProtocolError("no url in the session answer",
                                        provider=PROVIDER) from exc
        await self._connect(url, {})
        self._start_reader()

    async def _send_audio(self, pcm: bytes) -> None:
        if pcm:
            await self._send(pcm)
            self._provider_time += len(pcm) / self._bytes_per_second

    async def _finalize(self) -> None:
        # No acknowledgement either: the final reaching the audio position of the request
        # answers it (`WebSocketStream._final_reached`).
        silence = int(FINALIZE_SILENCE * self._bytes_per_second) // 2 * 2
        self._injected.append((self._provider_time, FINALIZE_SILENCE))
        self._expect_finalized()
        await self._send(bytes(silence))
        self._finalize_sent(self._provider_time)
        self._provider_time += FINALIZE_SILENCE

    async def _close_stream(self) -> None:
        # stop_recording -> remaining finals -> end_recording -> end_session -> close 1000.
        await self._send_end_of_stream()

    def _end_of_stream(self) -> dict[str, Any]:
        return {"type": "stop_recording"}

    def _segment_open(self) -> bool:
        return self._open is not None

    def _to_stream(self, t: float) -> float:
        """Provider time -> our stream time (remove the silence we injected)."""
        shift = 0.0
        for at, seconds in self._injected:
            if t >= at + seconds:
                shift += seconds
            elif t > at:
                shift += t - at
        return round(t - shift, 3)

    def _shifted(self, t: Transcript) -> Transcript:
        from dataclasses import replace

        words = tuple(replace(w, start=self._to_stream(w.start), end=self._to_stream(w.end))
                      for w in t.words)
        return replace(t, start=self._to_stream(t.start), end=self._to_stream(t.end),
                       words=words)

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "transcript":
            raw = parse_transcript(message)
            t = self._shifted(raw)
            if t.segment_id in self._finals:
                return
            if not t.is_final:
                if t.text:
                    self._open = t.segment_id
                    if self.options.interim_results:
                        await self._emit(t)
                self._final_reached(None)
                return
            self._finals.add(t.segment_id)
            if self._open == t.segment_id:
                self._open = None
            await self._emit(t)
            self._final_reached(raw.end)
        elif kind == "speech_start":
            await self._emit(SpeechStarted(self._to_stream(float(message["data"]["time"]))))
        elif kind == "speech_end":
            await self._emit(UtteranceEnd(self._to_stream(float(message["data"]["time"]))))
        elif kind == "end_recording":
            duration = (message.get("data") or {}).get("recording_duration")
            if duration is not None:
                await self._emit(ProviderUsage(float(duration)))
        elif kind == "end_session":
            await self._finalized()
            self._finish()
        elif kind == "error" or (message.get("error") and not message.get("acknowledged")):
            error = message.get("error") or message.get("data") or {}
            text = error.get("message") if isinstance(error, dict) else str(error)
            if isinstance(text, dict | list):  # never raw JSON in a close reason
                text = provider_message(json.dumps(text))
            raise ProviderProtocolError(str(text or "upstream error"), provider=PROVIDER,
                                        code="error")

    async def _on_upstream_closed(self) -> None:
        await self._finalized()

    def _close_error(self, code: int, reason: str) -> ProviderError | None:
        return close_error(code, reason)


class GladiaAdapter(HttpAdapter):
    provider = PROVIDER
    credential_env = "GLADIA_API_KEY"
    catalogue = MODELS

    def open_stream(self, model: str, options: StreamOptions) -> GladiaStream:
        self.capabilities(model)
        return GladiaStream(model, options, self.context, self.http)
