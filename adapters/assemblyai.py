"""AssemblyAI Universal Streaming v3 (``/v3/ws``) over our own WebSocket.

Protocol: https://www.assemblyai.com/docs/speech-to-text/universal-streaming/message-sequence.
Why not the SDK's async client: its ``connect`` reports a refused handshake through a callback
and returns, and a message that fails its strict validation kills its read task silently
(PROVIDERS.md §7.1); we speak the documented JSON ourselves (docs/providers.md).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlencode

from adapters._tasks import cancel_and_wait
from adapters._ws import WebSocketStream
from adapters.base import (
    BYTES_PER_SAMPLE,
    Adapter,
    AdapterContext,
    Capabilities,
    ProviderAuthError,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUsage,
    SpeechStarted,
    StreamOptions,
    Transcript,
    Word,
    put_while_alive,
)

PROVIDER = "assemblyai"
# Every audio frame must hold 50-1000 ms and frames must not arrive faster than real time,
# else the session closes with 3007
# (https://www.assemblyai.com/docs/streaming/common-session-errors-and-closures).
FRAME_MS = 50  # the size AssemblyAI recommends for the lowest latency
MIN_FRAME_MS = 50
# Seconds of audio we may send ahead of the wall clock (after a client stall, for instance).
PACING_CREDIT = 0.2

_LANGS = ("en", "es", "fr", "de", "it", "pt")
MODELS: dict[str, tuple[str, Capabilities]] = {
    "universal-streaming-english": ("AssemblyAI Universal-Streaming English", Capabilities(
        diarization=True, custom_vocabulary=True, languages=("en",))),
    "universal-streaming-multilingual": ("AssemblyAI Universal-Streaming Multilingual",
                                         Capabilities(diarization=True, custom_vocabulary=True,
                                                      language_detection=True,
                                                      languages=_LANGS)),
    # Universal-3 Pro formats every end-of-turn inline, so punctuation cannot be turned off.
    "u3-rt-pro": ("AssemblyAI Universal-3 Pro Streaming", Capabilities(
        diarization=True, custom_vocabulary=True, language_detection=True,
        initial_prompt=True, punctuation=False, languages=_LANGS)),
}
INLINE_FORMATTING = {"u3-rt-pro"}


# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True, slots=True)
class Turn:
    order: int
    end_of_turn: bool
    formatted: bool
    transcript: str
    words: tuple[Word, ...]
    language: str | None
    speaker: str | None


def parse_turn(message: dict[str, Any]) -> Turn:
    """A ``Turn`` message -> `Turn`; word times arrive in milliseconds, we use seconds."""
    words = tuple(
        Word(word=str(w["text"]), start=int(w["start"]) / 1000, end=int(w["end"]) / 1000,
             confidence=None if w.get("confidence") is None else float(w["confidence"]),
             speaker=None if w.get("speaker") is None else str(w["speaker"]))
        for w in message.get("words") or ()
    )
    return Turn(
        order=int(message["turn_order"]),
        end_of_turn=bool(message.get("end_of_turn")),
        formatted=bool(message.get("turn_is_formatted")),
        transcript=str(message.get("transcript") or "").strip(),
        words=words,
        language=message.get("language_code"),
        speaker=None if message.get("speaker_label") is None else str(message["speaker_label"]),
    )


class TurnTracker:
    """Turns ``Turn`` messages into our transcripts, one final per ``turn_order``.

    With ``format_turns=true`` Universal-Streaming sends the end-of-turn twice: unformatted,
    then formatted with the same ``turn_order``; we hold the first and finalize with the
    second (released early if anything else arrives first). Pure: no I/O.
    """

    def __init__(self, *, expect_formatted: bool, interim_results: bool = True) -> None:
        self.expect_formatted = expect_formatted
        self.interim_results = interim_results
        self._held: Turn | None = None
        self._done: set[int] = set()
        self._open: int | None = None  # turn with partials but no final yet

    @property
    def turn_open(self) -> bool:
        return self._held is not None or self._open is not None

    def feed(self, turn: Turn) -> list[Transcript]:
        out = self.flush() if self._held and self._held.order != turn.order else []
        if turn.order in self._done:
            return out  # the formatted duplicate of a turn we already finalized
        if not turn.end_of_turn:
            text = " ".join(w.word for w in turn.words) or turn.transcript
            if text:
                self._open = turn.order
                if self.interim_results:
                    out.append(_transcript(turn, text, is_final=False))
            return out
        if self.expect_formatted and not turn.formatted:
            self._held = turn
            return out
        self._held = None
        return [*out, self._final(turn)]

    def flush(self) -> list[Transcript]:
        held, self._held = self._held, None
        return [self._final(held)] if held is not None else []

    def _final(self, turn: Turn) -> Transcript:
        self._done.add(turn.order)
        if self._open == turn.order:
            self._open = None
        text = turn.transcript or " ".join(w.word for w in turn.words)
        return _transcript(turn, text, is_final=True)


def _transcript(turn: Turn, text: str, *, is_final: bool) -> Transcript:
    confidences = [w.confidence for w in turn.words if w.confidence is not None]
    speakers = Counter(w.speaker for w in turn.words if w.speaker)
    return Transcript(
        segment_id=f"aai-{turn.order}", is_final=is_final, text=text,
        start=turn.words[0].start if turn.words else 0.0,
        end=turn.words[-1].end if turn.words else 0.0, words=turn.words,
        confidence=sum(confidences) / len(confidences) if confidences else None,
        language=turn.language,
        speaker=turn.speaker or (speakers.most_common(1)[0][0] if speakers else None),
    )


def close_error(code: int, reason: str) -> ProviderError | None:
    """AssemblyAI close / ``Error`` codes (common-session-errors-and-closures)."""
    if code in (1000, 1005):
        return None
    message = f"upstream closed: {reason or code}"
    kw: dict[str, Any] = {"provider": PROVIDER, "code": code}
    if code in (1008, 4001, 4002, 4003):
        return ProviderAuthError(message, **kw)
    if code in (3009, 4029):
        return ProviderRateLimited(message, retryable=True, **kw)
    if code == 3008:
        return ProviderTimeout(message, **kw)
    if code in (3006, 3007):
        return ProviderProtocolError(message, **kw)
    return ProviderUnavailable(message, retryable=True, **kw)


def ws_query(model: str, options: StreamOptions) -> dict[str, str]:
    """Query parameters of ``/v3/ws``; ``speech_model`` and ``sample_rate`` are required."""
    query = {"speech_model": model, "sample_rate": str(options.sample_rate),
             "encoding": "pcm_s16le",
             "format_turns": "true" if options.punctuation or model in INLINE_FORMATTING
             else "false"}
    if options.custom_vocabulary:
        query["keyterms_prompt"] = json.dumps(list(options.custom_vocabulary))
    if options.language == "auto":
        query["language_detection"] = "true"
    if options.diarization:
        query["speaker_labels"] = "true"
        if options.speakers_expected:
            query["max_speakers"] = str(options.speakers_expected)
    if options.initial_prompt:
        query["prompt"] = options.initial_prompt
    return query


# ------------------------------------------------------------------------------- stream


class AssemblyAIStream(WebSocketStream):
    provider = PROVIDER
    stall_window = 10.0  # pongs answer within milliseconds; Turns only while speech flows
    # Audio seconds sent per wall-clock second: AssemblyAI takes real time (1.0); tests of
    # long recordings speed both this and the fake's clock up together.
    pace: ClassVar[float] = 1.0

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext) -> None:
        super().__init__(model, options, context)
        query = ws_query(model, options)
        self._query = query
        self._tracker = TurnTracker(
            expect_formatted=query["format_turns"] == "true" and model not in INLINE_FORMATTING,
            interim_results=options.interim_results)
        self._bytes_per_ms = options.sample_rate * BYTES_PER_SAMPLE // 1000
        self._buffer = bytearray()
        self._outbox: asyncio.Queue[bytes | dict[str, Any]] = asyncio.Queue(maxsize=20)  # 1 s
        self._next_send = 0.0
        self._sent_seconds = 0.0  # audio on the wire
        self._sender_task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        base = (self.context.base_url or "wss://streaming.assemblyai.com").rstrip("/")
        # The key goes bare in Authorization, no scheme (api-reference/streaming-api).
        await self._connect(f"{base}/v3/ws?{urlencode(self._query)}",
                            {"Authorization": str(self.context.api_key)})
        await self._await_begin()
        self._start_reader()
        self._sender_task = self._spawn(self._sender(), "sender")

    async def _await_begin(self) -> None:
        raw = await self._receive_first("Begin")
        message = json.loads(raw)
        if message.get("type") == "Error":
            raise self._error_message(message)
        if message.get("type") != "Begin":
            raise ProviderProtocolError(f"expected Begin, got {message.get('type')!r}",
                                        provider=PROVIDER)

    async def _sender(self) -> None:
        """Send queued frames in order, never faster than real time (times `pace`)."""
        loop = asyncio.get_running_loop()
        while True:
            item = await self._outbox.get()
            if isinstance(item, dict):
                if item["type"] == "Terminate":
                    await self._send_end_of_stream()
                    return
                await self._send_json(item)
                if item["type"] == "ForceEndpoint":
                    self._finalize_sent(self._sent_seconds)
                continue
            now = loop.time()
            self._next_send = max(self._next_send, now - PACING_CREDIT / self.pace)
            if self._next_send > now:
                await asyncio.sleep(self._next_send - now)
            await self._send(item)
            seconds = len(item) / (self._bytes_per_ms * 1000)
            self._sent_seconds += seconds
            self._next_send += seconds / self.pace

    def _end_of_stream(self) -> dict[str, Any]:
        return {"type": "Terminate"}

    async def _stop_sending(self) -> None:
        """An early exit: no more paced audio, `Terminate` goes out at once."""
        task = self._sender_task
        if task is not None and not task.done():
            await cancel_and_wait([task], expected=(Exception,))

    def _segment_open(self) -> bool:
        return self._tracker.turn_open

    async def _salvage(self) -> None:
        for event in self._tracker.flush():  # a held end-of-turn is a final already
            await self._emit(event)

    async def _send_audio(self, pcm: bytes) -> None:
        self._buffer += pcm
        await self._drain(FRAME_MS)

    async def _drain(self, min_ms: int) -> None:
        frame = FRAME_MS * self._bytes_per_ms
        while len(self._buffer) >= min_ms * self._bytes_per_ms:
            chunk = bytes(self._buffer[:frame])
            del self._buffer[:frame]
            await self._enqueue(chunk)

    async def _enqueue(self, item: bytes | dict[str, Any]) -> None:
        """Queue for the paced sender; waits while it is behind, fails if it has died."""
        assert self._sender_task is not None
        if not await put_while_alive(self._outbox, item, self._sender_task):
            raise self._ended_error()

    async def _finalize(self) -> None:
        # A remainder under 50 ms stays buffered for the next frame. ForceEndpoint has no
        # marked answer: once it is on the wire, the final reaching its audio position
        # answers it (`WebSocketStream._final_reached`).
        await self._drain(MIN_FRAME_MS)
        self._expect_finalized()
        await self._enqueue({"type": "ForceEndpoint"})

    async def _close_stream(self) -> None:
        if self._buffer:  # the tail, padded with silence to the 50 ms minimum
            minimum = MIN_FRAME_MS * self._bytes_per_ms
            self._buffer += bytes(max(0, minimum - len(self._buffer)))
        await self._drain(1)
        await self._enqueue({"type": "Terminate"})

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "Turn":
            events = self._tracker.feed(parse_turn(message))
            for event in events:
                await self._emit(event)
            finals = [e for e in events if e.is_final]
            self._final_reached(finals[-1].end if finals else None)
        elif kind == "SpeechStarted":
            await self._emit(SpeechStarted(int(message.get("timestamp") or 0) / 1000))
        elif kind == "Termination":
            await self._release()
            if message.get("audio_duration_seconds") is not None:
                await self._emit(ProviderUsage(float(message["audio_duration_seconds"])))
        elif kind == "Error":
            raise self._error_message(message)

    def _error_message(self, message: dict[str, Any]) -> ProviderError:
        code = int(message.get("error_code") or 3005)
        return close_error(code, str(message.get("error") or "")) or ProviderProtocolError(
            "upstream error", provider=PROVIDER, code=code)

    async def _release(self) -> None:
        for event in self._tracker.flush():
            await self._emit(event)
        await self._finalized()

    async def _on_upstream_closed(self) -> None:
        await self._release()

    def _close_error(self, code: int, reason: str) -> ProviderError | None:
        return close_error(code, reason)


class AssemblyAIAdapter(Adapter):
    provider = PROVIDER
    credential_env = "ASSEMBLYAI_API_KEY"
    catalogue = MODELS

    def open_stream(self, model: str, options: StreamOptions) -> AssemblyAIStream:
        self.capabilities(model)
        return AssemblyAIStream(model, options, self.context)
