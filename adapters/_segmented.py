"""Streaming over a batch transcription API (Groq, OpenAI ``whisper-1``).

These providers have no streaming endpoint: the stream cuts the audio at voice-activity
boundaries with the local engine's VAD (`adapters.local.vad.VoiceActivitySegmenter`) and POSTs each
utterance as a WAV file to the OpenAI-compatible ``/audio/transcriptions`` endpoint
(``verbose_json`` with word timestamps), one final per utterance
(https://console.groq.com/docs/speech-to-text,
https://platform.openai.com/docs/api-reference/audio/createTranscription).

We call the endpoint with httpx rather than the openai SDK: it is one multipart POST, the SDK
would only add retries we must disable, and Groq should not need OpenAI's package.
"""

from __future__ import annotations

import asyncio
import io
import math
import wave
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from adapters.base import (
    CANONICAL_SAMPLE_RATE,
    AdapterContext,
    Finalized,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUsage,
    SpeechStarted,
    StreamEvent,
    StreamOptions,
    SttStream,
    Transcript,
    UtteranceEnd,
    Word,
    http_status_error,
    map_transport_exception,
    parse_retry_after,
    provider_message,
    put_while_alive,
)
from adapters.local.vad import SpeechEnd, SpeechStart, Utterance, VoiceActivitySegmenter

# verbose_json names the language in English ("english"); we speak ISO 639-1.
LANGUAGE_NAMES = {"english": "en", "spanish": "es", "french": "fr", "german": "de",
                  "italian": "it", "portuguese": "pt", "dutch": "nl", "japanese": "ja",
                  "chinese": "zh", "russian": "ru", "korean": "ko", "polish": "pl"}


def wav_bytes(audio: np.ndarray, rate: int = CANONICAL_SAMPLE_RATE) -> bytes:
    """float32 samples in [-1, 1] -> a 16-bit mono WAV file."""
    pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def prompt_for(options: StreamOptions) -> str | None:
    """The initial prompt, with custom vocabulary appended (Whisper's only biasing knob)."""
    parts = [options.initial_prompt] if options.initial_prompt else []
    if options.custom_vocabulary:
        parts.append(", ".join(options.custom_vocabulary) + ".")
    return " ".join(parts) or None


def transcription_form(model: str, options: StreamOptions) -> list[tuple[str, str]]:
    form = [("model", model), ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment")]
    if options.language != "auto":
        form.append(("language", options.language))
    prompt = prompt_for(options)
    if prompt:
        form.append(("prompt", prompt))
    if options.temperature is not None:
        form.append(("temperature", str(options.temperature)))
    return form


def parse_verbose_json(body: dict[str, Any], *, segment_id: str, offset: float,
                       language: str | None = None) -> Transcript:
    """A ``verbose_json`` answer for an utterance starting at `offset` s -> one final."""
    words = tuple(Word(word=str(w["word"]).strip(), start=round(offset + float(w["start"]), 3),
                       end=round(offset + float(w["end"]), 3))
                  for w in body.get("words") or ())
    segments = body.get("segments") or ()
    logprobs = [float(s["avg_logprob"]) for s in segments if s.get("avg_logprob") is not None]
    detected = str(body.get("language") or "").lower()
    duration = float(body.get("duration") or 0.0)
    return Transcript(
        segment_id=segment_id, is_final=True, text=str(body.get("text") or "").strip(),
        start=words[0].start if words else round(offset, 3),
        end=words[-1].end if words else round(offset + duration, 3),
        words=words,
        confidence=math.exp(sum(logprobs) / len(logprobs)) if logprobs else None,
        language=language or LANGUAGE_NAMES.get(detected, detected or None),
    )


@dataclass(frozen=True, slots=True)
class _Job:
    start: float
    audio: np.ndarray


class SegmentedStream(SttStream):
    """VAD-segmented stream over ``POST {base}/audio/transcriptions``; finals only."""

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext, *,
                 provider: str, base_url: str, http: httpx.AsyncClient) -> None:
        super().__init__(model, options)
        self.provider = provider
        self.context = context
        self._base = base_url.rstrip("/")
        self._http = http
        self._vad = VoiceActivitySegmenter()
        self._jobs: asyncio.Queue[_Job | StreamEvent | None] = asyncio.Queue(maxsize=8)
        self._index = 0
        self._rate = options.sample_rate
        self._usage = 0.0  # seconds the provider says it transcribed (verbose_json duration)
        self._worker: asyncio.Task[None] | None = None
        self._error: Exception | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.context.api_key}"}

    async def _start(self) -> None:
        if self._rate != CANONICAL_SAMPLE_RATE:
            raise ProviderProtocolError(f"expects {CANONICAL_SAMPLE_RATE} Hz audio, got "
                                        f"{self._rate}", provider=self.provider)
        # No session to open: check the key now, so a bad one fails the start, not the
        # first utterance.
        response = await self._request("GET", "/models", self.context.connect_timeout)
        self._check(response)
        self._worker = self._spawn(self._work(), "uploader")

    def _fail(self, error: Exception) -> None:
        if not self._ended:
            self._error = self._error or error
        super()._fail(error)

    async def _queue(self, job: _Job | StreamEvent | None) -> None:
        """Queue for the uploader; waits while it is busy, fails at once if it has died (a
        failed, stalled-out or dropped upload), so no caller ever waits on a dead worker."""
        if self._worker is None or not await put_while_alive(self._jobs, job, self._worker):
            raise self._error or ProviderProtocolError("the stream has ended",
                                                       provider=self.provider)

    async def _send_audio(self, pcm: bytes) -> None:
        if self._ended:
            await self._queue(None)  # raises the error that ended the stream
        await self._queue_events(self._vad.feed(pcm))

    async def _finalize(self) -> None:
        await self._queue_events(self._vad.cut())
        await self._queue(Finalized())

    async def _close_stream(self) -> None:
        await self._queue_events(self._vad.flush())
        await self._queue(None)

    async def _shutdown(self) -> None:
        """The uploader task is cancelled by `aclose`; the HTTP pool belongs to the adapter."""

    async def _queue_events(self, events: list[Any]) -> None:
        # The VAD says SpeechEnd before the Utterance it closes; we report the utterance end
        # after that utterance's final.
        speech_end: UtteranceEnd | None = None
        for event in events:
            if isinstance(event, SpeechStart):
                await self._emit(SpeechStarted(event.sample / CANONICAL_SAMPLE_RATE))
            elif isinstance(event, Utterance):
                await self._queue(_Job(event.start / CANONICAL_SAMPLE_RATE, event.audio))
            elif isinstance(event, SpeechEnd):
                speech_end = UtteranceEnd(event.sample / CANONICAL_SAMPLE_RATE)
                continue
            if speech_end is not None:
                await self._queue(speech_end)
                speech_end = None
        if speech_end is not None:
            await self._queue(speech_end)

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            if job is None:
                if self._usage:
                    await self._emit(ProviderUsage(round(self._usage, 3)))
                self._finish()
                return
            if isinstance(job, _Job):
                final = await self._transcribe(job)
                if final.text:
                    await self._emit(final)
            else:
                await self._emit(job)

    async def _transcribe(self, job: _Job) -> Transcript:
        files = {"file": ("utterance.wav", wav_bytes(job.audio), "audio/wav")}
        data: dict[str, list[str]] = {}
        for key, value in transcription_form(self.model, self.options):
            data.setdefault(key, []).append(value)
        response = await self._request("POST", "/audio/transcriptions",
                                       self.context.flush_timeout, data=data, files=files)
        self._check(response)
        try:
            body = response.json()
        except ValueError as exc:
            raise ProviderProtocolError("malformed transcription response",
                                        provider=self.provider, code="malformed") from exc
        segment_id = f"{self.provider}-{self._index}"
        self._index += 1
        self._usage += float(body.get("duration") or 0.0)
        language = None if self.options.language == "auto" else self.options.language
        return parse_verbose_json(body, segment_id=segment_id, offset=job.start,
                                  language=language)

    async def _request(self, method: str, path: str, budget: float,
                       **kw: Any) -> httpx.Response:
        """One request, bounded as a whole by `budget` s (httpx bounds each phase only)."""
        try:
            async with asyncio.timeout(budget):
                return await self._http.request(method, self._base + path,
                                                headers=self._headers(),
                                                timeout=httpx.Timeout(budget), **kw)
        except TimeoutError as exc:
            raise ProviderTimeout(f"timed out: no answer to {method} {path} within {budget:g} s",
                                  provider=self.provider, retryable=True) from exc
        except httpx.HTTPError as exc:
            mapped = map_transport_exception(exc, self.provider)
            if mapped is None:
                raise
            raise mapped from exc

    def _check(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        raise self._status_error(response)

    def _status_error(self, response: httpx.Response) -> ProviderError:
        return http_status_error(self.provider, response.status_code,
                                 provider_message(response.text),
                                 retry_after=parse_retry_after(
                                     response.headers.get("retry-after")))
