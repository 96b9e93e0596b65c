"""Deepgram Flux (``/v2/listen``, flux-general-en / flux-general-multi): turn-based streaming
for voice agents, served by the ``deepgram`` provider (`DeepgramAdapter` opens this stream for
``flux-*`` models).

Protocol: https://developers.deepgram.com/docs/flux (message shapes from deepgram-sdk
``deepgram/listen/v2/types/``). One ``TurnInfo`` message per change of the current turn:
``StartOfTurn`` → speech_started, ``Update`` → partial, ``EagerEndOfTurn`` / ``TurnResumed`` →
our `TurnEvent`, ``EndOfTurn`` → the turn's final and utterance_end. Gotcha
(https://developers.deepgram.com/docs/flux/close-stream): ``CloseStream`` does not finalize the
open turn (the last message is an ``Update``, no ``Metadata``, and the server closes without a
close code), so the adapter forces the end of the turn with ``ForceEndTurn`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from adapters._keepalive import KeepaliveStream
from adapters._silence import SilenceClock
from adapters.base import (
    BYTES_PER_SAMPLE,
    AdapterContext,
    Capabilities,
    ProviderError,
    ProviderProtocolError,
    ProviderUnavailable,
    ProviderWarning,
    SpeechStarted,
    StreamOptions,
    Transcript,
    TurnEvent,
    UtteranceEnd,
    Word,
)

PROVIDER = "deepgram"
# "80 ms audio chunks are strongly recommended" for Flux's turn detection.
CHUNK_MS = 80
# Flux has no KeepAlive message: while the client is silent we send 80 ms of silence every
# few seconds (Deepgram closes a stream idle for 10 s) and take it back out of the timestamps.
KEEPALIVE_INTERVAL = 4.0
# Eager end-of-turn signals for voice agents (range 0.3-0.9, at most eot_threshold, 0.7).
EAGER_EOT_THRESHOLD = 0.5
# Flux closes without a close code both after CloseStream and on some errors: the close is
# normal only if Flux had reported on all the audio we sent (its TurnInfo `audio_window_end`,
# which an Update carries every 240 ms), give or take this much.
HEARD_SLACK = 0.5
# A finalize with no turn open yet (its audio may still be in flight) waits this long at most.
UNOPENED_TURN_WAIT = 2.0

FLUX_MODELS: dict[str, tuple[str, Capabilities]] = {
    # Flux always punctuates and formats: punctuation cannot be turned off.
    "flux-general-en": ("Deepgram Flux General English", Capabilities(
        custom_vocabulary=True, punctuation=False, languages=("en",))),
    "flux-general-multi": ("Deepgram Flux General Multilingual", Capabilities(
        custom_vocabulary=True, punctuation=False, language_detection=True)),
}
TURN_EVENTS = {"EagerEndOfTurn": "eager_end_of_turn", "TurnResumed": "turn_resumed"}


# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True, slots=True)
class TurnInfo:
    event: str
    turn_index: int
    start: float
    end: float
    transcript: str
    words: tuple[Word, ...]
    confidence: float | None  # end_of_turn_confidence
    language: str | None
    trigger: str | None = None  # EndOfTurn: model | manual | timeout


def parse_turn_info(message: dict[str, Any]) -> TurnInfo:
    """A ``TurnInfo`` message -> `TurnInfo` (times in seconds)."""
    start = float(message.get("audio_window_start") or 0.0)
    end = float(message.get("audio_window_end") or start)
    words = tuple(
        Word(str(w.get("word") or ""), float(w.get("start") or start),
             float(w.get("end") or w.get("start") or start),
             None if w.get("confidence") is None else float(w["confidence"]))
        for w in message.get("words") or ())
    confidence = message.get("end_of_turn_confidence")
    languages = message.get("languages") or ()
    return TurnInfo(str(message.get("event") or ""), int(message.get("turn_index") or 0),
                    start, end, str(message.get("transcript") or "").strip(), words,
                    None if confidence is None else round(float(confidence), 4),
                    str(languages[0]) if languages else None,
                    None if message.get("trigger") is None else str(message["trigger"]))


def flux_query(model: str, options: StreamOptions) -> list[tuple[str, str]]:
    query = [("model", model), ("encoding", "linear16"),
             ("sample_rate", str(options.sample_rate)),
             ("eager_eot_threshold", str(EAGER_EOT_THRESHOLD))]
    if model.endswith("-multi") and options.language != "auto":
        query.append(("language_hint", options.language))
    query.extend(("keyterm", term) for term in options.custom_vocabulary)
    return query


def error_message(message: dict[str, Any]) -> ProviderError:
    """``Error`` {code, description}: a server-side failure is retryable, the rest is ours."""
    code = str(message.get("code") or "Error")
    text = f"upstream error: {str(message.get('description') or code)[:120]}"
    if "INTERNAL" in code or "UNAVAILABLE" in code:
        return ProviderUnavailable(text, provider=PROVIDER, code=code, retryable=True)
    return ProviderProtocolError(text, provider=PROVIDER, code=code)


# ------------------------------------------------------------------------------- stream


class FluxStream(KeepaliveStream):
    provider = PROVIDER
    keepalive_default = KEEPALIVE_INTERVAL

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext) -> None:
        super().__init__(model, options, context)
        self._frame = options.sample_rate * BYTES_PER_SAMPLE * CHUNK_MS // 1000
        self._buffer = bytearray()
        self._clock = SilenceClock()
        self._turn: TurnInfo | None = None  # the open turn's latest TurnInfo
        self._buffered = False  # client audio sent since the last end of turn
        # Provider time of the audio sent when ForceEndTurn went out, until its EndOfTurn.
        self._force_at: float | None = None
        self._closing = False
        self._heard_until = 0.0  # provider time Flux has reported on

    async def _start(self) -> None:
        base = (self.context.base_url or "wss://api.deepgram.com").rstrip("/")
        url = f"{base}/v2/listen?{urlencode(flux_query(self.model, self.options))}"
        await self._connect(url, {"Authorization": f"Token {self.context.api_key}"})
        self._start_reader()
        self._start_keepalive()

    async def _send_keepalive(self) -> None:
        await self._send_frame(bytes(self._frame), inserted=True)

    async def _send_audio(self, pcm: bytes) -> None:
        self._buffer += pcm
        while len(self._buffer) >= self._frame:
            frame = bytes(self._buffer[:self._frame])
            del self._buffer[:self._frame]
            await self._send_frame(frame)

    async def _send_frame(self, frame: bytes, *, inserted: bool = False) -> None:
        await self._send(frame)
        self._clock.advance(len(frame) / (self._frame * 1000 / CHUNK_MS), inserted=inserted)
        self._sent()
        self._buffered = self._buffered or not inserted

    async def _flush_buffer(self) -> None:
        """The remainder under 80 ms, padded with silence to a whole chunk."""
        if self._buffer:
            self._buffer += bytes(self._frame - len(self._buffer))
            await self._send_audio(b"")

    async def _finalize(self) -> None:
        await self._flush_buffer()
        if self._turn is None and not self._buffered:
            self._expect_finalized()
            await self._finalized()
            return
        # An open turn is answered by its EndOfTurn; audio with no turn yet may hold none.
        self._expect_finalized(None if self._turn else min(UNOPENED_TURN_WAIT,
                                                           self.context.flush_timeout),
                               quiet=self._turn is None)
        await self._force_end_turn()

    async def _force_end_turn(self) -> None:
        self._force_at = self._clock.provider_seconds
        await self._send_json({"type": "ForceEndTurn"})

    def _answers_force(self, info: TurnInfo) -> bool:
        """An EndOfTurn answers our ForceEndTurn if it was triggered by it or covers all the
        audio sent before it: a natural end of an earlier turn, still in flight, does not."""
        return self._force_at is not None and (
            info.trigger == "manual" or info.end >= self._force_at - CHUNK_MS / 2000)

    def _end_of_stream(self) -> dict[str, Any]:
        """Sent on an early exit (client gone, failure) if `_close_stream` did not run."""
        return {"type": "CloseStream"}

    async def _close_stream(self) -> None:
        await self._flush_buffer()
        self._closing = True
        self._arm_flush_deadline("CloseStream")
        if self._turn is not None:  # CloseStream alone would drop the open turn
            await self._force_end_turn()  # its EndOfTurn sends CloseStream
            return
        if self._buffered:  # audio whose turn may not have started yet: end it in order
            await self._force_end_turn()
            self._closing = False  # nothing to wait for: CloseStream follows at once
        await self._send_json({"type": "CloseStream"})

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "TurnInfo":
            await self._on_turn(parse_turn_info(message))
        elif kind == "Error":
            raise error_message(message)
        elif kind == "Warning":
            await self._emit(ProviderWarning(str(message.get("code") or "provider_warning"),
                                             str(message.get("description") or "")[:200]))
        # Connected, ConfigureSuccess: nothing to relay.

    async def _on_turn(self, raw: TurnInfo) -> None:
        self._heard_until = max(self._heard_until, raw.end)
        info = self._in_stream_time(raw)
        if info.event == "StartOfTurn":
            await self._emit(SpeechStarted(info.words[0].start if info.words else info.start))
        if info.event in TURN_EVENTS:
            await self._emit(TurnEvent(TURN_EVENTS[info.event], info.turn_index,
                                       info.confidence))
        if info.event == "EndOfTurn":
            await self._end_turn(info, answers_force=self._answers_force(raw))
            return
        if self._turn is None and not info.transcript and info.event == "Update":
            # Between turns Flux reports on silence. Once it has reported on all the audio
            # sent before our ForceEndTurn with no turn open, that had nothing to end.
            if self._force_at is not None and raw.end >= self._force_at - CHUNK_MS / 2000:
                await self._force_answered()
            return
        self._turn = info
        if info.transcript and self.options.interim_results:
            await self._emit(self._transcript(info, is_final=False))

    async def _end_turn(self, info: TurnInfo | None, *, answers_force: bool) -> None:
        """Close the open turn (with `info`, its EndOfTurn, or the last Update we saw)."""
        info = info or self._turn
        self._turn = None
        self._buffered = False
        if info is not None and (info.transcript or info.event != "EndOfTurn"):
            await self._emit(self._transcript(info, is_final=True))
            await self._emit(UtteranceEnd(info.words[-1].end if info.words else info.end))
        if answers_force:
            await self._force_answered()

    async def _force_answered(self) -> None:
        self._force_at = None
        await self._finalized()
        if self._closing:
            self._closing = False
            await self._send_json({"type": "CloseStream"})

    def _in_stream_time(self, info: TurnInfo) -> TurnInfo:
        to = self._clock.to_stream
        return TurnInfo(info.event, info.turn_index, to(info.start), to(info.end),
                        info.transcript,
                        tuple(Word(w.word, to(w.start), to(w.end), w.confidence)
                              for w in info.words),
                        info.confidence, info.language, info.trigger)

    def _transcript(self, info: TurnInfo, *, is_final: bool) -> Transcript:
        words = info.words
        return Transcript(f"flux-{info.turn_index}", is_final, info.transcript,
                          words[0].start if words else info.start,
                          words[-1].end if words else info.end, words,
                          confidence=_mean([w.confidence for w in words]),
                          language=info.language)

    async def _on_upstream_closed(self) -> None:
        # Flux closes without a code after CloseStream; a turn still open keeps its last Update.
        if self._turn is not None:
            await self._end_turn(None, answers_force=False)
        await self._finalized()

    def _close_error(self, code: int, reason: str) -> ProviderError | None:
        from adapters.deepgram import close_error

        unheard = self._clock.provider_seconds - self._heard_until
        if code == 1005 and unheard > HEARD_SLACK:
            return ProviderProtocolError(
                f"upstream closed without a close code, {unheard:.1f} s of audio unanswered",
                provider=PROVIDER, code=1005)
        return close_error(code, reason)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 4) if present else None
