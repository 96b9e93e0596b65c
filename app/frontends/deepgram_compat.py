"""``WS /v1/listen`` — Deepgram's live-streaming protocol over the session core.

A Deepgram client (the official SDKs included) changes only its base URL and key. Options are
Deepgram's query parameters, translated to a `SessionRequest`; results go out shaped as
Deepgram's ``Results`` / ``SpeechStarted`` / ``UtteranceEnd`` / ``Metadata`` / ``Error``
(shared/PROVIDERS.md §1). Refusals before the session exists are HTTP statuses on the
handshake with a ``dg-error`` header, as Deepgram answers them. Options the model cannot honour
are accepted and reported: in the ``x-speechgate-options`` / ``x-speechgate-warnings`` response
headers and in the closing ``Metadata``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import QueryParams

from adapters import base as ab
from app.credentials import key_from_request
from app.errors import GatewayError
from app.frontends.base import FrameRelay, Message
from app.frontends.handshake import DenyingFrontend, deepgram_subprotocol_key
from app.params import parse_bool, parse_list, parse_session_params
from app.session import (
    ProviderSwitched,
    Session,
    SessionCreated,
    SessionEnded,
    SessionEvent,
    SessionWarning,
)

logger = logging.getLogger(__name__)

# Deepgram parameters with a direct Speechgate meaning (the rest are accepted and reported).
_HANDLED = frozenset({
    "model", "language", "encoding", "sample_rate", "channels", "interim_results", "punctuate",
    "smart_format", "diarize", "diarize_model", "keyterm", "keywords", "endpointing",
    "utterance_end_ms", "vad_events", "fallback", "api_key", "token",
})
_KEYWORD_BOOST = re.compile(r":-?\d+(\.\d+)?$")
_WORD_EDGES = re.compile(r"^[^\w']+|[^\w']+$")


def _bad(name: str, why: str) -> GatewayError:
    return GatewayError(4400, f"invalid parameter {name}: {why}", code="invalid_parameter")


def translate_query(query: QueryParams, default_model: str) -> tuple[dict[str, list[str]],
                                                                      dict[str, Any], list[str]]:
    """Deepgram query -> (Speechgate parameters, front-end features, ignored parameter names)."""

    def one(name: str) -> str | None:
        values = query.getlist(name)
        return values[-1].strip() if values else None

    params: dict[str, list[str]] = {"output_format": ["json"]}
    model = one("model") or default_model
    params["model"] = [model if "." in model else f"deepgram.{model}"]
    language = one("language")
    if language:
        params["language"] = ["auto" if language.lower() == "multi" else language]
    encoding = one("encoding")
    if encoding is not None and encoding.lower() not in ("linear16", "pcm_s16le"):
        raise _bad("encoding", f"only linear16 is supported, got {encoding[:20]!r}")
    rate = one("sample_rate")
    if rate:
        params["sample_rate"] = [rate]
    channels = one("channels")
    if channels is not None and channels != "1":
        raise _bad("channels", f"only mono audio (channels=1) is supported, got {channels[:8]!r}")
    interim = one("interim_results")
    params["interim_results"] = [interim or "false"]
    punctuate = [v for v in (one("punctuate"), one("smart_format")) if v is not None]
    if punctuate:
        params["punctuation"] = ["true" if any(parse_bool("punctuate", v) for v in punctuate)
                                 else "false"]
    diarize = one("diarize")
    if one("diarize_model"):
        params["diarization"] = ["true"]
    elif diarize is not None:
        params["diarization"] = [diarize]
    terms = list(parse_list(query.getlist("keyterm")))
    terms += [_KEYWORD_BOOST.sub("", k) for k in parse_list(query.getlist("keywords"))]
    if terms:
        params["custom_vocabulary"] = terms
    fallback = query.getlist("fallback")
    if fallback:
        params["fallback"] = fallback
    features: dict[str, Any] = {"interim_results": parse_bool("interim_results",
                                                              params["interim_results"][0])}
    vad_events = one("vad_events")
    features["vad_events"] = parse_bool("vad_events", vad_events) if vad_events else False
    utterance_end = one("utterance_end_ms")
    if utterance_end:
        if not utterance_end.isdigit() or not 1000 <= int(utterance_end) <= 5000:
            raise _bad("utterance_end_ms", f"expected 1000-5000, got {utterance_end[:12]!r}")
    features["utterance_end"] = bool(utterance_end)
    endpointing = one("endpointing")
    if endpointing and endpointing.lower() != "false" and not endpointing.isdigit():
        raise _bad("endpointing", f"expected milliseconds or false, got {endpointing[:12]!r}")
    ignored = sorted(name for name in query.keys() if name not in _HANDLED)
    if endpointing:
        ignored.append("endpointing")  # the provider's own endpointing decides
    return params, features, ignored


def plain_word(text: str) -> str:
    """Deepgram's ``word``: lower case, no surrounding punctuation."""
    return _WORD_EDGES.sub("", text).lower() or text.lower()


class DeepgramConnection(DenyingFrontend, FrameRelay):
    label = "deepgram"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_id = str(uuid.uuid4())
        self.features: dict[str, Any] = {}
        self.ignored: list[str] = []
        self.created: SessionCreated | None = None
        self._speakers: dict[str, int] = {}
        self._finalizing = 0  # client Finalize messages not yet acknowledged
        self._finals_since_finalize = 0
        self._model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, "speechgate"))
        self._duration = 0.0
        self._sha = hashlib.sha256()

    async def _serve(self) -> None:
        """Refusals before the session exists are HTTP statuses on the handshake."""
        params, self.features, self.ignored = translate_query(
            self.ws.query_params, self.gateway.settings.default_model)
        request = parse_session_params(params,
                                       default_model=self.gateway.settings.default_model)
        secret, protocol = deepgram_subprotocol_key(self.ws)
        secret = key_from_request(self.ws.headers, self.ws.query_params) or secret
        principal = await self.gateway.authenticate(secret, self.client_host)
        async with self._open_session(request, principal) as session:
            events = session.events()
            created = await anext(events)
            await self._accept(protocol, self._headers(created))
            await self._run(session, events)

    def _denial(self, error: GatewayError) -> tuple[dict[str, object], dict[str, str]]:
        return ({"err_code": error.code.upper(), "err_msg": error.message,
                 "request_id": self.request_id},
                {"dg-error": error.reason, "dg-request-id": self.request_id})

    def _headers(self, created: SessionEvent) -> list[tuple[bytes, bytes]]:
        headers = [(b"dg-request-id", self.request_id.encode())]
        if isinstance(created, SessionCreated):
            self.created = created
            options = {**created.options, **{name: "ignored" for name in self.ignored}}
            headers.append((b"x-speechgate-model", created.model.encode()))
            headers.append((b"x-speechgate-options", ",".join(
                f"{k}={v}" for k, v in sorted(options.items())).encode()))
            if created.warnings:
                text = " ".join("; ".join(created.warnings).split())  # no CR/LF in a header
                headers.append((b"x-speechgate-warnings",
                                text.encode("ascii", "replace")[:2000]))
        return headers

    async def _close(self, code: int, reason: str) -> None:
        if code == 4408:  # Deepgram's own idle close: 1011 with NET-0001
            code, reason = 1011, f"NET-0001 {reason}"[:123]
        await super()._close(code, reason)

    def error_frame(self, error: GatewayError) -> str | None:
        return json.dumps({"type": "Error", "variant": error.code, "description": error.message,
                           "message": "", "code": error.close_code})

    async def _run(self, session: Session, events: AsyncIterator[SessionEvent]) -> None:
        await self._supervise(session, self._read(session), self._write(events))

    # An empty frame is Deepgram's older end-of-stream signal (`FrameRelay._read`).

    async def _audio_after_end(self) -> None:
        await self._schema_error("audio after CloseStream is ignored", "")

    async def _audio(self, session: Session, frame: bytes) -> None:
        self._sha.update(frame)
        await super()._audio(session, frame)

    async def _control(self, session: Session, message: Message) -> None:
        text = message.text
        if message.error is not None:
            await self._schema_error(message.error, text)
            return
        data = message.value
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "KeepAlive":
            session.touch()
        elif kind == "Finalize":
            if not session.input_closed:
                self._finalizing += 1
                self._finals_since_finalize = 0
                await session.finalize()
        elif kind == "CloseStream":
            await session.close_stream()
        elif kind == "Configure":
            await self._send(json.dumps({
                "type": "ConfigureFailure", "request_id": self.request_id,
                "code": "CONFIGURE_KEYTERMS_NOT_SUPPORTED",
                "description": "mid-stream Configure is not supported; pass keyterm on the URL"}))
        else:
            await self._schema_error("unknown message type; expected KeepAlive, Finalize, "
                                     "CloseStream or Configure", text)

    async def _schema_error(self, description: str, message: str) -> None:
        await self._send(json.dumps({"type": "Error", "variant": "SchemaError",
                                     "description": description, "message": message[:200]}))

    async def _write(self, events: AsyncIterator[SessionEvent]) -> None:
        async for event in events:
            frame = self.render(event)
            if frame is not None:
                await self._send(json.dumps(frame, ensure_ascii=False))
            if await self._ended_by(event):
                return

    # ---- rendering -------------------------------------------------------------------------

    def render(self, event: SessionEvent) -> dict[str, Any] | None:
        if isinstance(event, ab.Transcript):
            return self.results(event)
        if isinstance(event, ab.Finalized):
            if not self._finalizing:
                return None
            frame = None
            if self._finals_since_finalize == 0:  # Deepgram always answers a Finalize
                frame = self.results(ab.Transcript("", True, "", self._duration,
                                                   self._duration))
            self._finalizing -= 1
            return frame
        if isinstance(event, ab.SpeechStarted):
            if self.features.get("vad_events"):
                return {"type": "SpeechStarted", "channel": [0, 1], "timestamp": event.time}
            return None
        if isinstance(event, ab.UtteranceEnd):
            if self.features.get("utterance_end"):
                return {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": event.time}
            return None
        if isinstance(event, SessionEnded):
            return self.metadata(event)
        if isinstance(event, ProviderSwitched | SessionWarning):
            logger.debug("deepgram front-end: %s", event)
        return None

    def _speaker(self, label: str | None) -> int | None:
        if label is None:
            return None
        if label.isdigit():
            return int(label)
        return self._speakers.setdefault(label, len(self._speakers))

    def results(self, t: ab.Transcript) -> dict[str, Any] | None:
        if not t.is_final and not self.features.get("interim_results"):
            return None
        from_finalize = t.is_final and self._finalizing > 0
        if t.is_final:
            self._finals_since_finalize += 1
            self._duration = max(self._duration, t.end)
        words = []
        for w in t.words:
            word: dict[str, Any] = {"word": plain_word(w.word.strip()), "start": w.start,
                                    "end": w.end, "confidence": w.confidence
                                    if w.confidence is not None else 1.0,
                                    "punctuated_word": w.word.strip()}
            speaker = self._speaker(w.speaker or t.speaker)
            if speaker is not None:
                word["speaker"] = speaker
            words.append(word)
        confidence = t.confidence if t.confidence is not None else (
            sum(w["confidence"] for w in words) / len(words) if words else 0.0)
        model = self.created.model if self.created else ""
        return {
            "type": "Results", "channel_index": [0, 1],
            "duration": round(max(0.0, t.end - t.start), 3), "start": t.start,
            "is_final": t.is_final, "speech_final": t.is_final and not from_finalize,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": t.text.strip(),
                                          "confidence": round(confidence, 4), "words": words}]},
            "metadata": {"request_id": self.request_id, "model_uuid": self._model_uuid,
                         "model_info": {"name": model, "version": "speechgate",
                                        "arch": model.partition(".")[0]}},
        }

    def metadata(self, ended: SessionEnded) -> dict[str, Any]:
        created = self.created
        options = dict(created.options) if created else {}
        options.update({name: "ignored" for name in self.ignored})
        model = created.model if created else ""
        return {
            "type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
            "sha256": self._sha.hexdigest(),
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "duration": ended.audio_seconds, "channels": 1, "models": [self._model_uuid],
            "model_info": {self._model_uuid: {"name": model, "version": "speechgate",
                                              "arch": model.partition(".")[0]}},
            "speechgate": {"session_id": created.session_id if created else None,
                           "model": model, "options": options,
                           "warnings": list(created.warnings) if created else [],
                           "provider_seconds": ended.provider_seconds},
        }
