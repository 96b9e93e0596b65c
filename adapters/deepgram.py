"""Deepgram live streaming (``/v1/listen``, Nova-3 / Nova-2) over our own WebSocket.

Protocol: https://developers.deepgram.com/reference/speech-to-text/listen-streaming.
Why not deepgram-sdk: it connects through the deprecated ``websockets.legacy`` client and lets
raw connection errors escape; we keep connect, close codes and back-pressure in our hands and
speak the documented JSON directly (docs/providers.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from adapters._keepalive import FinalizeMessageStream
from adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUsage,
    SpeechStarted,
    StreamEvent,
    StreamOptions,
    Transcript,
    UtteranceEnd,
    Word,
)
from adapters.deepgram_flux import FLUX_MODELS, FluxStream

PROVIDER = "deepgram"
# Deepgram closes a stream that receives neither audio nor text for 10 s (NET-0001); send a
# KeepAlive every 3-5 s while the client is silent
# (https://developers.deepgram.com/docs/audio-keep-alive).
IDLE_TIMEOUT = 10.0
KEEPALIVE_INTERVAL = 4.0
ENDPOINTING_MS = 300
UTTERANCE_END_MS = 1000

_NOVA3 = Capabilities(diarization=True, custom_vocabulary=True, language_detection=True)
_NOVA3_EN = Capabilities(diarization=True, custom_vocabulary=True, languages=("en",))
_NOVA2 = Capabilities(diarization=True, custom_vocabulary=True)
_NOVA2_EN = Capabilities(diarization=True, custom_vocabulary=True, languages=("en",))
MODELS: dict[str, tuple[str, Capabilities]] = {
    "nova-3": ("Deepgram Nova-3", _NOVA3),
    "nova-3-general": ("Deepgram Nova-3 General", _NOVA3),
    "nova-3-medical": ("Deepgram Nova-3 Medical", _NOVA3_EN),
    "nova-2": ("Deepgram Nova-2", _NOVA2),
    "nova-2-general": ("Deepgram Nova-2 General", _NOVA2),
    "nova-2-meeting": ("Deepgram Nova-2 Meeting", _NOVA2_EN),
    "nova-2-phonecall": ("Deepgram Nova-2 Phone call", _NOVA2_EN),
    "nova-2-finance": ("Deepgram Nova-2 Finance", _NOVA2_EN),
    "nova-2-conversationalai": ("Deepgram Nova-2 Conversational AI", _NOVA2_EN),
    "nova-2-voicemail": ("Deepgram Nova-2 Voicemail", _NOVA2_EN),
    "nova-2-video": ("Deepgram Nova-2 Video", _NOVA2_EN),
    "nova-2-medical": ("Deepgram Nova-2 Medical", _NOVA2_EN),
    "nova-2-drivethru": ("Deepgram Nova-2 Drive-thru", _NOVA2_EN),
    "nova-2-automotive": ("Deepgram Nova-2 Automotive", _NOVA2_EN),
    "nova-2-atc": ("Deepgram Nova-2 Air traffic control", _NOVA2_EN),
}


# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True, slots=True)
class ResultPiece:
    """One ``Results`` message: a window of audio, interim or final."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...]
    confidence: float | None
    language: str | None
    is_final: bool
    speech_final: bool
    from_finalize: bool


def parse_results(message: dict[str, Any]) -> ResultPiece:
    """A ``Results`` message -> `ResultPiece` (first channel, best alternative; times in s)."""
    start = float(message.get("start") or 0.0)
    duration = float(message.get("duration") or 0.0)
    alternatives = (message.get("channel") or {}).get("alternatives") or [{}]
    best = alternatives[0]
    words = tuple(
        Word(
            word=str(w.get("punctuated_word") or w["word"]),
            start=float(w["start"]),
            end=float(w["end"]),
            confidence=_float(w.get("confidence")),
            speaker=None if w.get("speaker") is None else str(w["speaker"]),
        )
        for w in best.get("words") or ()
    )
    languages = best.get("languages") or ()
    return ResultPiece(
        text=str(best.get("transcript") or "").strip(),
        start=words[0].start if words else start,
        end=words[-1].end if words else start + duration,
        words=words,
        confidence=_float(best.get("confidence")),
        language=languages[0] if languages else None,
        is_final=bool(message.get("is_final")),
        speech_final=bool(message.get("speech_final")),
        from_finalize=bool(message.get("from_finalize")),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def majority_speaker(words: tuple[Word, ...]) -> str | None:
    if not words or words[0].speaker is None:  # no diarization: skip the counting
        return None
    speakers = Counter(w.speaker for w in words if w.speaker is not None)
    return speakers.most_common(1)[0][0] if speakers else None


class Segmenter:
    """Turns Deepgram's interim / ``is_final`` / ``speech_final`` pieces into our segments.

    A segment's final text is the concatenation of its ``is_final`` pieces up to
    ``speech_final``, ``UtteranceEnd`` or a ``from_finalize`` result
    (https://developers.deepgram.com/docs/understand-endpointing-interim-results); each segment
    is finalized exactly once. Pure: no I/O.
    """

    def __init__(self, interim_results: bool = True) -> None:
        self.interim_results = interim_results
        self._index = 0
        self._finals: list[ResultPiece] = []
        self._partial_sent = False

    @property
    def segment_id(self) -> str:
        return f"dg-{self._index}"

    def feed(self, piece: ResultPiece) -> list[StreamEvent]:
        if not piece.is_final:
            return self._partial([*self._finals, piece])
        if piece.text:
            self._finals.append(piece)
        if piece.speech_final or piece.from_finalize:
            return self.flush()
        return self._partial(self._finals)

    def flush_settled(self) -> list[StreamEvent]:
        """The stream is failing: a final of the `is_final` pieces received, if any (the
        interim text after them was never settled, so it is not turned into a final)."""
        if not any(p.text for p in self._finals):
            return []
        return self.flush()

    def flush(self) -> list[StreamEvent]:
        """Close the open segment: its final, if it has words or had partials."""
        pieces, self._finals = self._finals, []
        if not pieces and not self._partial_sent:
            return []
        event = self._transcript(pieces, is_final=True)
        self._index += 1
        self._partial_sent = False
        return [event]

    def _partial(self, pieces: list[ResultPiece]) -> list[StreamEvent]:
        if not self.interim_results or not any(p.text for p in pieces):
            return []
        self._partial_sent = True
        return [self._transcript(pieces, is_final=False)]

    def _transcript(self, pieces: list[ResultPiece], *, is_final: bool) -> Transcript:
        pieces = [p for p in pieces if p.text]
        if len(pieces) == 1:  # the common case: one interim window (hot path of the relay)
            p = pieces[0]
            return Transcript(self.segment_id, is_final, p.text, p.start, p.end, p.words,
                              p.confidence, p.language, majority_speaker(p.words))
        words = tuple(w for p in pieces for w in p.words)
        confidences = [p.confidence for p in pieces if p.confidence is not None]
        return Transcript(
            segment_id=self.segment_id,
            is_final=is_final,
            text=" ".join(p.text for p in pieces),
            start=pieces[0].start if pieces else 0.0,
            end=pieces[-1].end if pieces else 0.0,
            words=words,
            confidence=sum(confidences) / len(confidences) if confidences else None,
            language=next((p.language for p in pieces if p.language), None),
            speaker=majority_speaker(words),
        )


def close_error(code: int, reason: str) -> ProviderError | None:
    """Deepgram close frames: NET-0001 idle timeout, DATA-0000 undecodable audio, ...

    https://developers.deepgram.com/docs/stt-troubleshooting-websocket-data-and-net-errors
    """
    if code in (1000, 1005):
        return None
    tag = reason.split()[0].rstrip(":.") if reason else str(code)
    if tag.startswith("NET-"):
        return ProviderTimeout(f"upstream closed: {reason}", provider=PROVIDER, code=tag,
                               retryable=True)
    if tag.startswith("DATA-"):
        return ProviderProtocolError(f"upstream closed: {reason}", provider=PROVIDER, code=tag)
    return ProviderProtocolError(f"upstream closed: {reason or code}", provider=PROVIDER,
                                 code=code, retryable=code == 1011)


def listen_query(model: str, options: StreamOptions) -> list[tuple[str, str]]:
    """Query parameters of ``/v1/listen`` for our options."""
    punct = "true" if options.punctuation else "false"
    query = [
        ("model", model), ("encoding", "linear16"), ("sample_rate", str(options.sample_rate)),
        ("channels", "1"), ("interim_results", "true"), ("punctuate", punct),
        ("smart_format", punct), ("endpointing", str(ENDPOINTING_MS)),
        ("utterance_end_ms", str(UTTERANCE_END_MS)), ("vad_events", "true"),
        # Nova-3 takes `multi` for code-switching language detection.
        ("language", "multi" if options.language == "auto" else options.language),
    ]
    if options.diarization:
        query.append(("diarize", "true"))
    # Nova-3 boosts with `keyterm` (repeat per term); older models use `keywords`
    # (https://developers.deepgram.com/docs/keyterm).
    param = "keyterm" if model.startswith("nova-3") else "keywords"
    query.extend((param, term) for term in options.custom_vocabulary)
    return query


# ------------------------------------------------------------------------------- stream


class DeepgramStream(FinalizeMessageStream):
    provider = PROVIDER
    # Deepgram itself gives up on a link silent for this long (NET-0001).
    stall_window = IDLE_TIMEOUT

    keepalive_default = KEEPALIVE_INTERVAL
    _segmenter: Segmenter
    finalize_message = {"type": "Finalize"}

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext) -> None:
        super().__init__(model, options, context)
        self._segmenter = Segmenter(options.interim_results)

    async def _start(self) -> None:
        base = (self.context.base_url or "wss://api.deepgram.com").rstrip("/")
        url = f"{base}/v1/listen?{urlencode(listen_query(self.model, self.options))}"
        await self._connect(url, {"Authorization": f"Token {self.context.api_key}"})
        self._start_reader()
        self._start_keepalive()

    async def _send_keepalive(self) -> None:
        await self._send_json({"type": "KeepAlive"})

    async def _close_stream(self) -> None:
        # CloseStream -> trailing finals -> Metadata -> close 1000
        # (https://developers.deepgram.com/docs/close-stream).
        await self._send_end_of_stream()

    def _end_of_stream(self) -> dict[str, Any]:
        return {"type": "CloseStream"}

    async def _salvage(self) -> None:
        # `is_final` pieces already received are settled text: deliver them as the final of
        # their segment even though `speech_final` never came.
        for event in self._segmenter.flush_settled():
            await self._emit(event)

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "Results":
            piece = parse_results(message)
            for event in self._segmenter.feed(piece):
                await self._emit(event)
            if piece.from_finalize:  # the answer to one Finalize, in order
                await self._finalize_answered()
        elif kind == "UtteranceEnd":
            await self._flush_segmenter()
            await self._emit(UtteranceEnd(float(message.get("last_word_end") or 0.0)))
        elif kind == "SpeechStarted":
            await self._emit(SpeechStarted(float(message.get("timestamp") or 0.0)))
        elif kind == "Metadata":
            if message.get("duration") is not None:
                await self._emit(ProviderUsage(float(message["duration"])))
        elif kind == "Error":
            raise ProviderProtocolError(
                str(message.get("description") or "upstream error"), provider=PROVIDER,
                code=str(message.get("variant") or message.get("code") or "Error"))

    async def _on_upstream_closed(self) -> None:
        await self._flush_segmenter()
        await self._finalized()

    def _close_error(self, code: int, reason: str) -> ProviderError | None:
        return close_error(code, reason)


class DeepgramAdapter(Adapter):
    provider = PROVIDER
    credential_env = "DEEPGRAM_API_KEY"
    catalogue = {**MODELS, **FLUX_MODELS}

    def open_stream(self, model: str, options: StreamOptions) -> DeepgramStream | FluxStream:
        self.capabilities(model)
        if model in FLUX_MODELS:  # /v2/listen (adapters/deepgram_flux.py)
            return FluxStream(model, options, self.context)
        return DeepgramStream(model, options, self.context)
