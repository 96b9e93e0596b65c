"""``WS /v1/realtime?intent=transcription`` — OpenAI's Realtime transcription protocol over
the session core (shared/PROVIDERS.md §3).

The key comes as ``Authorization: Bearer`` (or our other key methods), or from a browser as the
subprotocols ``realtime, openai-insecure-api-key.<key>``; a bad key is refused on the handshake
(HTTP 401). ``session.update`` sets the transcription session: input format (``audio/pcm`` at
24 kHz, ``audio/pcmu``, ``audio/pcma``), ``transcription.model`` (an OpenAI name such as
``gpt-4o-transcribe`` means ``openai.gpt-4o-transcribe``; any Speechgate id works),
``language``, ``prompt``, ``turn_detection`` (``server_vad`` or null) and ``noise_reduction``
(accepted, reported as not applied). The session core opens with the first audio; the model,
format, language and prompt are fixed from then on. Results: see `realtime_items`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import uuid
from collections.abc import AsyncIterator
from typing import Any

from app.credentials import key_from_request
from app.errors import GatewayError, to_gateway_error
from app.frontends.base import Disconnect
from app.frontends.g711 import decode as g711_decode
from app.frontends.handshake import DenyingFrontend, openai_subprotocol_key
from app.frontends.realtime_items import ItemTracker, event_id
from app.params import SessionRequest, parse_session_params
from app.safejson import dumps_compact
from app.session import Session, SessionError, SessionEvent
from auth.base import Principal

FORMATS = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}
MIN_COMMIT_SECONDS = 0.1
_FIXED = ("format", "transcription")  # cannot change once audio has started



MAX_PENDING_COMMITS = 32


class ClientError(Exception):
    """A recoverable error: an ``error`` event, and the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def error_event(code: str, message: str, *, param: str | None = None,
                client_event: str | None = None,
                kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": "error", "event_id": event_id(),
            "error": {"type": kind, "code": code, "message": message, "param": param,
                      "event_id": client_event}}


_BETA_FORMATS = {"pcm16": {"type": "audio/pcm", "rate": 24000},
                 "g711_ulaw": {"type": "audio/pcmu"}, "g711_alaw": {"type": "audio/pcma"}}


def beta_to_ga(session: Any) -> Any:
    """The beta ``transcription_session.update`` fields in the GA shape."""
    if not isinstance(session, dict):
        return session
    audio: dict[str, Any] = {}
    if "input_audio_format" in session:
        fmt = session["input_audio_format"]
        audio["format"] = _BETA_FORMATS.get(fmt, {"type": fmt}) if isinstance(fmt, str) else fmt
    for beta, ga in (("input_audio_transcription", "transcription"),
                     ("turn_detection", "turn_detection"),
                     ("input_audio_noise_reduction", "noise_reduction")):
        if beta in session:
            audio[ga] = session[beta]
    return {"type": "transcription", "audio": {"input": audio},
            **({"include": session["include"]} if "include" in session else {})}


class RealtimeConnection(DenyingFrontend):
    label = "openai-realtime"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_id = "sess_" + uuid.uuid4().hex[:20]
        default = self.gateway.settings.default_model
        self.config: dict[str, Any] = {
            "type": "transcription", "id": self.session_id,
            "object": "realtime.transcription_session",
            "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": default, "language": None, "prompt": ""},
                "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                   "prefix_padding_ms": 300, "silence_duration_ms": 500},
                "noise_reduction": None}},
            "include": [],
        }
        self.items = ItemTracker(server_vad=True)
        self.session: Session | None = None
        self._buffered = 0.0  # seconds appended since the last commit or clear
        self._sent = 0.0  # seconds of audio in the session

    @property
    def audio_in(self) -> dict[str, Any]:
        return self.config["audio"]["input"]  # type: ignore[no-any-return]

    # ---- handshake --------------------------------------------------------------------------

    async def _serve(self) -> None:
        intent = self.ws.query_params.get("intent")
        if intent not in (None, "transcription"):
            raise GatewayError(4400, f"invalid parameter intent: only intent=transcription "
                                     f"is served here, got {intent[:30]!r}")
        secret, protocol = openai_subprotocol_key(self.ws)
        secret = key_from_request(self.ws.headers, self.ws.query_params) or secret
        principal = await self.gateway.authenticate(secret, self.client_host)
        await self._accept(protocol)
        await self._event({"type": "session.created", "event_id": event_id(),
                           "session": self.config})
        await self._run(principal)

    def _denial(self, error: GatewayError) -> tuple[dict[str, object], dict[str, str]]:
        return {"error": {
            "message": error.message, "type": "invalid_request_error",
            "code": "invalid_api_key" if error.close_code == 4401 else error.code,
            "param": None}}, {}

    def error_frame(self, error: GatewayError) -> str | None:
        kind = "server_error" if error.close_code in (1011, 4502, 4503, 4504) \
            else "invalid_request_error"
        return dumps_compact(error_event(error.code, error.message, kind=kind))

    async def _event(self, event: dict[str, Any]) -> None:
        await self._send(dumps_compact(event))

    # ---- the connection ---------------------------------------------------------------------

    async def _run(self, principal: Principal) -> None:
        first = await self._configure()  # session.update until the first audio
        if first is None:
            return
        async with self._open_session(self._request(), principal) as session:
            self.session = session
            events = session.events()
            await anext(events)  # SessionCreated: our session.created went out already
            await self._audio(first)
            await self._supervise(session, self._read(session), self._write(events))

    @property
    def json_limit(self) -> int:
        return self.gateway.settings.max_frame_bytes  # audio travels as base64 in JSON

    async def _receive(self) -> dict[str, Any] | None:
        """The next client event (None: the client left); bad JSON is reported, not fatal."""
        while True:
            frame = await self.read_frame()
            if isinstance(frame, Disconnect):
                return None
            if isinstance(frame, bytes):
                await self._event(error_event(
                    "invalid_message", "binary frames are not part of this protocol: send "
                    "input_audio_buffer.append with base64 audio"))
                continue
            if frame.error is not None:
                await self._event(error_event("invalid_json", frame.error))
                continue
            data = frame.value
            if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                await self._event(error_event("invalid_event", "expected a JSON object with "
                                                               "a string type"))
                continue
            return data

    async def _configure(self) -> bytes | None:
        """Events until the first audio, within the idle timeout (no session holds a lease
        yet, but the connection must not sit open for ever)."""
        idle = self.gateway.settings.idle_timeout
        while True:
            try:
                async with asyncio.timeout(idle):
                    data = await self._receive()
            except TimeoutError:
                raise GatewayError(4408, f"idle timeout: no audio for {idle:g} s") from None
            if data is None:
                return None
            try:
                if data["type"] == "input_audio_buffer.append":
                    pcm = self._decode(data)
                    if pcm:
                        return pcm
                else:
                    await self._handle(data)
            except ClientError as exc:
                await self._event(error_event(exc.code, exc.message, param=exc.param,
                                              client_event=data.get("event_id")))

    async def _read(self, session: Session) -> None:
        while True:
            data = await self._receive()
            if data is None:
                return
            try:
                if data["type"] == "input_audio_buffer.append":
                    await self._audio(self._decode(data))
                else:
                    await self._handle(data)
            except ClientError as exc:
                await self._event(error_event(exc.code, exc.message, param=exc.param,
                                              client_event=data.get("event_id")))

    async def _write(self, events: AsyncIterator[SessionEvent]) -> None:
        async for event in events:
            for out in self.items.on_event(event):
                await self._event(out)
            if isinstance(event, SessionError):
                for out in self.items.fail(event.error.code, event.error.message):
                    await self._event(out)
            if await self._ended_by(event):
                return

    # ---- client events ----------------------------------------------------------------------

    async def _handle(self, data: dict[str, Any]) -> None:
        kind = data["type"]
        if kind in ("session.update", "transcription_session.update"):
            session = data.get("session")
            self._update(beta_to_ga(session) if kind.startswith("transcription_session")
                         else session)
            await self._event({"type": "session.updated", "event_id": event_id(),
                               "session": self.config})
        elif kind in ("input_audio_buffer.commit", "input_audio_buffer.clear") \
                and len(self.items.pending) >= MAX_PENDING_COMMITS:
            # Each waits for its finalize: a client committing faster than the provider
            # answers is told, not queued without bound.
            raise ClientError("too_many_pending_commits",
                              f"{MAX_PENDING_COMMITS} commits are still being transcribed; "
                              "wait for their completed events")
        elif kind == "input_audio_buffer.commit":
            if self._buffered < MIN_COMMIT_SECONDS:
                raise ClientError("input_audio_buffer_commit_empty",
                                  f"buffer too small. Expected at least 100ms of audio, but "
                                  f"buffer only has {self._buffered * 1000:.2f}ms of audio.")
            self._buffered = 0.0
            for out in self.items.commit(self._sent):
                await self._event(out)
            if self.session is not None:
                await self.session.finalize()
        elif kind == "input_audio_buffer.clear":
            self._buffered = 0.0
            if self.session is not None:
                self.items.clear()
                await self.session.finalize()
            await self._event({"type": "input_audio_buffer.cleared", "event_id": event_id()})
        else:
            raise ClientError("invalid_event_type", f"unknown event type {kind[:60]!r}; "
                              "expected session.update or input_audio_buffer.append, commit "
                              "or clear", "type")

    def _decode(self, data: dict[str, Any]) -> bytes:
        audio = data.get("audio")
        if not isinstance(audio, str):
            raise ClientError("invalid_value", "input_audio_buffer.append needs audio: "
                                               "base64 text", "audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError("invalid_value", "audio is not valid base64", "audio") from None
        fmt = self.audio_in["format"]["type"]
        pcm = g711_decode(raw, fmt[len("audio/"):]) if fmt != "audio/pcm" else raw
        seconds = len(pcm) / (2 * FORMATS[fmt])
        self._buffered += seconds
        return pcm

    async def _audio(self, pcm: bytes) -> None:
        if self.session is None or not pcm:
            return
        self._sent += len(pcm) / (2 * FORMATS[self.audio_in["format"]["type"]])
        await self._forward(self.session.send_audio(pcm))

    def _update(self, session: Any) -> None:
        if not isinstance(session, dict):
            raise ClientError("invalid_value", "session.update needs a session object",
                              "session")
        if session.get("type", "transcription") != "transcription":
            raise ClientError("invalid_value", "only transcription sessions are served here "
                                               "(session.type = transcription)", "session.type")
        new = copy.deepcopy(self.config)
        audio = session.get("audio", {}).get("input", {}) if isinstance(
            session.get("audio"), dict) else {}
        if not isinstance(audio, dict):
            raise ClientError("invalid_value", "session.audio.input must be an object",
                              "session.audio.input")
        target = new["audio"]["input"]
        if "format" in audio:
            target["format"] = self._format(audio["format"])
        if "transcription" in audio:
            target["transcription"] = self._transcription(audio["transcription"])
        if "turn_detection" in audio:
            target["turn_detection"] = self._turn_detection(audio["turn_detection"])
        if "noise_reduction" in audio:
            target["noise_reduction"] = audio["noise_reduction"]  # accepted; not applied
        if isinstance(session.get("include"), list):
            new["include"] = [i for i in session["include"] if isinstance(i, str)]
        if self.session is not None:
            for name in _FIXED:
                if target[name] != self.audio_in[name]:
                    raise ClientError("session_locked", f"audio.input.{name} cannot change "
                                      "once audio has been sent", f"session.audio.input.{name}")
        self.config = new
        self.items.server_vad = target["turn_detection"] is not None

    @staticmethod
    def _format(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict) or value.get("type") not in FORMATS:
            raise ClientError("invalid_value", "audio.input.format.type must be audio/pcm, "
                              "audio/pcmu or audio/pcma", "session.audio.input.format")
        if value["type"] == "audio/pcm" and value.get("rate", 24000) != 24000:
            raise ClientError("invalid_value", "Only a 24kHz sample rate is supported for "
                              "audio/pcm", "session.audio.input.format.rate")
        return {"type": value["type"], "rate": FORMATS[value["type"]]} \
            if value["type"] == "audio/pcm" else {"type": value["type"]}

    def _transcription(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ClientError("invalid_value", "audio.input.transcription must be an object",
                              "session.audio.input.transcription")
        model = value.get("model") or self.gateway.settings.default_model
        if not isinstance(model, str):
            raise ClientError("invalid_value", "transcription.model must be a string",
                              "session.audio.input.transcription.model")
        out = {"model": model, "language": value.get("language"),
               "prompt": value.get("prompt") or ""}
        try:
            self._request(out)  # validated now, not at the first audio
            self.gateway.registry.resolve(self._model_id(model))
        except GatewayError as exc:
            raise ClientError("invalid_value", exc.message,
                              "session.audio.input.transcription") from None
        except Exception as exc:
            err = to_gateway_error(exc)
            raise ClientError("invalid_value", err.message,
                              "session.audio.input.transcription.model") from None
        return out

    @staticmethod
    def _turn_detection(value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict) or value.get("type") not in ("server_vad",
                                                                     "semantic_vad"):
            raise ClientError("invalid_value", "turn_detection must be null, server_vad or "
                              "semantic_vad", "session.audio.input.turn_detection")
        return dict(value)

    @staticmethod
    def _model_id(model: str) -> str:
        return model if "." in model else f"openai.{model}"

    def _request(self, transcription: dict[str, Any] | None = None) -> SessionRequest:
        t = transcription or self.audio_in["transcription"]
        params: dict[str, list[str]] = {
            "model": [self._model_id(t["model"])], "output_format": ["json"],
            "interim_results": ["true"],
            "sample_rate": [str(FORMATS[self.audio_in["format"]["type"]])]}
        if t.get("language"):
            params["language"] = [str(t["language"])]
        if t.get("prompt"):
            params["initial_prompt"] = [str(t["prompt"])]
        return parse_session_params(params, default_model=self.gateway.settings.default_model)
