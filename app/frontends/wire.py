"""The native wire formats of shared/API.md §1.4: `text`, `json`, `verbose_json`.

`render(event, output_format)` returns the frame to send (a str), or None when the format
does not carry that event.
"""

from __future__ import annotations

from typing import Any

from adapters import base as ab
from app.errors import GatewayError
from app.safejson import dumps_compact
from app.session import (
    ProviderSwitched,
    SessionCreated,
    SessionEnded,
    SessionError,
    SessionEvent,
    SessionWarning,
)
from app.stabilizer import StableWords


def word_json(word: ab.Word) -> dict[str, Any]:
    out: dict[str, Any] = {"word": word.word, "start": word.start, "end": word.end,
                           "confidence": word.confidence}
    if word.speaker is not None:
        out["speaker"] = word.speaker
    return out


def transcript_json(t: ab.Transcript, language: str | None) -> dict[str, Any]:
    """The Speechall-compatible segment object (`json` format)."""
    out: dict[str, Any] = {"id": t.segment_id, "text": t.text,
                           "language": t.language or language, "is_final": t.is_final,
                           "start": t.start, "end": t.end}
    if t.speaker is not None:
        out["speaker"] = t.speaker
    out["words"] = [word_json(w) for w in t.words]
    return out


def error_json(error: GatewayError) -> dict[str, Any]:
    return {"error": error.to_json()}


def verbose_json(event: SessionEvent, provider: str, language: str | None) -> dict[str, Any]:
    if isinstance(event, SessionCreated):
        return {"type": "session.created", "session_id": event.session_id, "model": event.model,
                "provider": event.provider, "language": event.language,
                "sample_rate": event.sample_rate, "options": event.options,
                "warnings": list(event.warnings)}
    if isinstance(event, ab.Transcript):
        out: dict[str, Any] = {"type": "transcript", "segment_id": event.segment_id,
                               "is_final": event.is_final, "text": event.text,
                               "start": event.start, "end": event.end}
        if event.confidence is not None:
            out["confidence"] = event.confidence
        out["language"] = event.language or language
        if event.speaker is not None:
            out["speaker"] = event.speaker
        out["words"] = [word_json(w) for w in event.words]
        out["provider"] = provider
        return out
    if isinstance(event, ab.SpeechStarted):
        return {"type": "speech_started", "time": event.time}
    if isinstance(event, ab.UtteranceEnd):
        return {"type": "utterance_end", "time": event.time}
    if isinstance(event, ab.Finalized):
        return {"type": "finalized"}
    if isinstance(event, ab.TurnEvent):
        return {"type": "turn", "event": event.event, "turn_index": event.turn_index,
                "confidence": event.confidence}
    if isinstance(event, ProviderSwitched):
        return {"type": "provider_switched", "from": event.from_model, "to": event.to_model,
                "reason": event.reason, "replayed_seconds": event.replayed_seconds,
                "lost_seconds": event.lost_seconds}
    if isinstance(event, SessionWarning):
        return {"type": "warning", "code": event.code, "message": event.message}
    if isinstance(event, SessionError):
        return {"type": "error", **event.error.to_json()}
    if isinstance(event, SessionEnded):
        latency: dict[str, float] = {}
        if event.first_partial_ms is not None:
            latency["first_partial_ms"] = event.first_partial_ms
        if event.final_after_end_ms is not None:
            latency["final_after_end_ms"] = event.final_after_end_ms
        return {"type": "session.ended", "reason": event.reason,
                "usage": {"audio_seconds": event.audio_seconds,
                          "provider_seconds": event.provider_seconds},
                "latency": latency}
    raise TypeError(f"no verbose_json form for {type(event).__name__}")


class WireFormatter:
    """Renders one session's events in its output format."""

    def __init__(self, output_format: str) -> None:
        self.output_format = output_format
        self.provider = ""
        self.language: str | None = None
        self.stable = StableWords()

    def render(self, event: SessionEvent) -> str | None:
        if isinstance(event, SessionCreated):
            self.provider, self.language = event.provider, event.language
        if isinstance(event, ProviderSwitched):
            self.provider = event.to_model.partition(".")[0]
        fmt = self.output_format
        if fmt == "verbose_json":
            out = verbose_json(event, self.provider, self.language)
            if isinstance(event, ab.Transcript):
                out["stable_words"] = self.stable.count(event)
            return dumps_compact(out)
        if fmt == "json":
            if isinstance(event, ab.Transcript):
                return dumps_compact(transcript_json(event, self.language)
                              | {"stable_words": self.stable.count(event)})
            if isinstance(event, SessionError):
                return dumps_compact(error_json(event.error))
            return None
        # text: final segments only, plain text
        if isinstance(event, ab.Transcript) and event.is_final and event.text:
            return event.text
        return None

    def render_error(self, error: GatewayError) -> str | None:
        """An error that happened before the session existed (bad key, bad parameter...)."""
        if self.output_format == "verbose_json":
            return dumps_compact({"type": "error", **error.to_json()})
        if self.output_format == "json":
            return dumps_compact(error_json(error))
        return None
