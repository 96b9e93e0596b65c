"""Soniox real-time transcription (``/transcribe-websocket``, stt-rt-v4 / v5) over our own
WebSocket.

Protocol: https://soniox.com/docs/stt/api-reference/websocket-api. The key goes on the
handshake (``Authorization: Bearer``), never in the config message: a key in the first message
is deprecated and refused from 2027-01-15
(https://soniox.com/docs/guides/migrate-websocket-authentication). Why not an SDK: Soniox's
Python package wraps the same JSON in threads and callbacks; we keep connect, close codes and
back-pressure in our hands (docs/providers.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from adapters._keepalive import FinalizeMessageStream
from adapters._ws import http_status_error
from adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    ProviderError,
    ProviderUsage,
    StreamEvent,
    StreamOptions,
    Transcript,
    Word,
)

PROVIDER = "soniox"
# Soniox ends a stream that receives neither audio nor a keepalive for 20 s; keep it alive
# every 5 s while the client is silent (https://soniox.com/docs/stt/rt/connection-keepalive).
KEEPALIVE_INTERVAL = 5.0
END_TOKEN = "<end>"  # an endpoint (with enable_endpoint_detection)
FIN_TOKEN = "<fin>"  # the answer to {"type": "finalize"}

_CAPS = Capabilities(diarization=True, custom_vocabulary=True, language_detection=True,
                     initial_prompt=True)
MODELS: dict[str, tuple[str, Capabilities]] = {
    "stt-rt-v4": ("Soniox stt-rt-v4", _CAPS),
    "stt-rt-v5": ("Soniox stt-rt-v5", _CAPS),
}


# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    start: float  # seconds
    end: float
    confidence: float | None
    is_final: bool
    speaker: str | None
    language: str | None

    @property
    def marker(self) -> bool:
        return self.text in (END_TOKEN, FIN_TOKEN)


def parse_tokens(message: dict[str, Any]) -> list[Token]:
    """The ``tokens`` of a response (times arrive in ms; we use seconds)."""
    return [
        Token(
            text=str(t.get("text") or ""),
            start=int(t.get("start_ms") or 0) / 1000,
            end=int(t.get("end_ms") or 0) / 1000,
            confidence=None if t.get("confidence") is None else float(t["confidence"]),
            is_final=bool(t.get("is_final")),
            speaker=None if t.get("speaker") is None else str(t["speaker"]),
            language=None if t.get("language") is None else str(t["language"]),
        )
        for t in message.get("tokens") or ()
    ]


def words_of(tokens: list[Token]) -> tuple[Word, ...]:
    """Sub-word tokens -> words: a token starting with a space begins a new word."""
    words: list[Word] = []
    for token in tokens:
        if token.marker or not token.text.strip():
            continue
        if words and not token.text[:1].isspace():
            last = words[-1]
            words[-1] = Word(last.word + token.text, last.start, token.end,
                             _min(last.confidence, token.confidence), last.speaker)
        else:
            words.append(Word(token.text.strip(), token.start, token.end, token.confidence,
                              token.speaker))
    return tuple(words)


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


class Segmenter:
    """Final tokens (sent once) accumulate into the open segment, closed at ``<end>``/``<fin>``;
    non-final tokens (re-sent every response, may change) only ever shape its partial. Pure."""

    def __init__(self, interim_results: bool = True) -> None:
        self.interim_results = interim_results
        self._index = 0
        self._finals: list[Token] = []
        self._partial_sent = False

    @property
    def segment_open(self) -> bool:
        return bool(self._finals) or self._partial_sent

    def feed(self, tokens: list[Token]) -> tuple[list[StreamEvent], bool]:
        """Events for one response, and whether it held the ``<fin>`` marker."""
        events: list[StreamEvent] = []
        fin = False
        pending: list[Token] = []
        for token in tokens:
            if not token.is_final:
                pending.append(token)
            elif token.marker:
                events += self.flush()
                fin = fin or token.text == FIN_TOKEN
            else:
                self._finals.append(token)
        if self.interim_results and any(t.text.strip() for t in pending):
            events.append(self._transcript([*self._finals, *pending], is_final=False))
            self._partial_sent = True
        return events, fin

    def flush(self) -> list[StreamEvent]:
        tokens, self._finals = self._finals, []
        if not any(t.text.strip() for t in tokens) and not self._partial_sent:
            return []
        event = self._transcript(tokens, is_final=True)
        self._index += 1
        self._partial_sent = False
        return [event]

    def _transcript(self, tokens: list[Token], *, is_final: bool) -> Transcript:
        words = words_of(tokens)
        confidences = [w.confidence for w in words if w.confidence is not None]
        speakers = Counter(w.speaker for w in words if w.speaker is not None)
        return Transcript(
            segment_id=f"sx-{self._index}", is_final=is_final,
            text="".join(t.text for t in tokens if not t.marker).strip(),
            start=words[0].start if words else 0.0, end=words[-1].end if words else 0.0,
            words=words,
            confidence=sum(confidences) / len(confidences) if confidences else None,
            language=next((t.language for t in tokens if t.language), None),
            speaker=speakers.most_common(1)[0][0] if speakers else None)


def config_message(model: str, options: StreamOptions) -> dict[str, Any]:
    """The first text frame: the stream's configuration (no key: that is on the handshake)."""
    config: dict[str, Any] = {
        "model": model, "audio_format": "pcm_s16le", "sample_rate": options.sample_rate,
        "num_channels": 1, "enable_endpoint_detection": True,
        "enable_speaker_diarization": options.diarization,
        "enable_language_identification": options.language == "auto",
    }
    if options.language != "auto":
        config["language_hints"] = [options.language]
    context: dict[str, Any] = {}
    if options.initial_prompt:
        context["text"] = options.initial_prompt
    if options.custom_vocabulary:
        context["terms"] = list(options.custom_vocabulary)
    if context:  # https://soniox.com/docs/stt/concepts/context
        config["context"] = context
    return config


def error_message(message: dict[str, Any]) -> ProviderError:
    """``{"error_code": 4xx/5xx, "error_message": ...}`` -> the error tree (HTTP semantics)."""
    try:
        code = int(message.get("error_code") or 500)
    except (TypeError, ValueError):
        code = 500
    return http_status_error(PROVIDER, code, str(message.get("error_message") or ""))


# ------------------------------------------------------------------------------- stream


class SonioxStream(FinalizeMessageStream):
    provider = PROVIDER
    keepalive_default = KEEPALIVE_INTERVAL
    # https://soniox.com/docs/stt/rt/manual-finalization: every token so far turns final,
    # then a `<fin>` token.
    _segmenter: Segmenter
    finalize_message = {"type": "finalize"}

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext) -> None:
        super().__init__(model, options, context)
        self._segmenter = Segmenter(options.interim_results)

    async def _start(self) -> None:
        base = (self.context.base_url or "wss://stt-rt.soniox.com").rstrip("/")
        await self._connect(f"{base}/transcribe-websocket",
                            {"Authorization": f"Bearer {self.context.api_key}"})
        await self._send_json(config_message(self.model, self.options))
        self._start_reader()
        self._start_keepalive()

    async def _send_keepalive(self) -> None:
        await self._send_json({"type": "keepalive"})

    async def _close_stream(self) -> None:
        # An empty frame ends the audio: the remaining finals, then `finished: true`, then close.
        await self._send_end_of_stream()

    def _end_of_stream(self) -> bytes:
        return b""

    async def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("error_code") is not None:
            raise error_message(message)
        events, fin = self._segmenter.feed(parse_tokens(message))
        for event in events:
            await self._emit(event)
        if fin:  # the answer to one finalize, in order
            await self._finalize_answered()
        if message.get("finished"):
            await self._release()
            if message.get("total_audio_proc_ms") is not None:
                await self._emit(ProviderUsage(int(message["total_audio_proc_ms"]) / 1000))

    async def _release(self) -> None:
        await self._flush_segmenter()
        await self._finalized()

    async def _on_upstream_closed(self) -> None:
        await self._release()


class SonioxAdapter(Adapter):
    provider = PROVIDER
    credential_env = "SONIOX_API_KEY"
    catalogue = MODELS

    def open_stream(self, model: str, options: StreamOptions) -> SonioxStream:
        self.capabilities(model)
        return SonioxStream(model, options, self.context)
