"""Socket.IO at ``/api/stt-realtime-socket`` — the cantonese.ai realtime protocol (API.md §5).

The protocol (https://docs.cantonese.ai/speech-to-text-realtime):

- connect with ``path: "/api/stt-realtime-socket"`` and ``extraHeaders: {"x-api-key": KEY}``
  (browsers, which cannot set headers on a WebSocket, may pass ``auth: {apiKey: KEY}`` or
  ``?api_key=``). A bad key refuses the Socket.IO handshake: the client gets ``connect_error``
  whose ``data`` is ``{"status": 401, "code": 4401}`` and does not reconnect by itself;
- client events ``start-session {sampleRate}``, ``audio-chunk {audio_base_64, sample_rate}``
  (base64 16-bit PCM), ``stop-session``;
- server events ``session-started``, ``transcript-message {message_type, ...}``,
  ``session-error {error}`` and ``session-closed {code, reason}`` (1000 = normal end).

``transcript-message`` follows the ElevenLabs realtime messages that cantonese.ai relays
(https://elevenlabs.io/docs/api-reference/speech-to-text/v-1-speech-to-text-realtime):
``session_started {session_id, config}``, ``partial_transcript {text}``, and for every final
``committed_transcript {text}`` then ``committed_transcript_with_timestamps {text,
language_code, words: [{text, start, end, type: "word", logprob?, speaker_id?}]}``.
``start-session`` may also carry ``model`` and ``language`` (extensions; the handshake query
``?model=&language=`` works too). One socket runs one session at a time, and may start
another after ``session-closed``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import engineio
import engineio.async_socket
import engineio.packet
import socketio
from socketio import packet as packet_types
from socketio.packet import Packet
from starlette.types import ASGIApp

from adapters import base as ab
from app.credentials import key_from_request
from app.errors import GatewayError, to_gateway_error
from app.frontends.base import stop_tasks, touch_while_forwarding
from app.gateway import Gateway
from app.params import SessionRequest, parse_session_params
from app.safejson import BadJson, loads_bounded
from app.session import (
    Session,
    SessionCreated,
    SessionEnded,
    SessionError,
    SessionWarning,
    open_session,
)
from auth.base import Principal

logger = logging.getLogger(__name__)

SOCKETIO_PATH = "api/stt-realtime-socket"
# The event a packet that does not parse becomes (see `bounded_packet_class`).
INVALID_EVENT = "speechgate-invalid-packet"
QUEUE_CHUNKS = 16  # audio chunks buffered per session before the socket stops being read


def word_message(word: ab.Word) -> dict[str, Any]:
    out: dict[str, Any] = {"text": word.word, "start": word.start, "end": word.end,
                           "type": "word"}
    if word.confidence is not None and word.confidence > 0:
        out["logprob"] = round(math.log(word.confidence), 4)
    if word.speaker is not None:
        out["speaker_id"] = word.speaker
    return out


def transcript_messages(event: ab.Transcript, language: str | None) -> list[dict[str, Any]]:
    """One session transcript -> the ``transcript-message`` payloads to emit, in order."""
    if not event.is_final:
        return [{"message_type": "partial_transcript", "text": event.text}]
    return [{"message_type": "committed_transcript", "text": event.text},
            {"message_type": "committed_transcript_with_timestamps", "text": event.text,
             "language_code": event.language or language,
             "words": [word_message(w) for w in event.words]}]


@dataclass
class _Client:
    principal: Principal
    origin: str | None
    query: dict[str, list[str]]
    session: _SocketSession | None = None


@dataclass
class _SocketSession:
    """One transcription session on one socket: client events in, server events out."""

    frontend: SocketIOFrontend
    sid: str
    request: SessionRequest
    client: _Client
    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS))
    task: asyncio.Task[None] | None = None
    forwarding: bool = False  # a chunk is being forwarded (see `touch_while_forwarding`)

    @property
    def rate(self) -> int:
        return self.request.options.sample_rate

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"sio:{self.sid}")

    async def put(self, item: bytes | None) -> bool:
        """Queue audio (None = stop); waits while the queue is full. False once ended."""
        assert self.task is not None
        if self.task.done():
            return False
        put = asyncio.ensure_future(self.queue.put(item))
        done, _ = await asyncio.wait({put, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if put not in done:
            put.cancel()
            return False
        return True

    async def _run(self) -> None:
        emit = self.frontend.emit
        code, reason = 1000, "session ended"
        try:
            async with open_session(self.frontend.gateway, self.request, self.client.principal,
                                    origin=self.client.origin) as session:
                feeder = asyncio.create_task(self._feed(session))
                alive = asyncio.create_task(touch_while_forwarding(
                    session, lambda: self.forwarding))
                try:
                    code, reason = await self._relay(session)
                finally:
                    await stop_tasks([feeder, alive])
        except Exception as exc:  # the session could not start, or failed
            error = to_gateway_error(exc)
            await emit("session-error", {"error": error.message, "code": error.close_code},
                       self.sid)
            code, reason = error.close_code, error.reason
        finally:
            if self.client.session is self:
                self.client.session = None
        if code != 1000:
            self.frontend.gateway.metrics.session_error(code)
        await emit("session-closed", {"code": code, "reason": reason}, self.sid)

    async def _feed(self, session: Session) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                await session.close_stream()
                return
            self.forwarding = True
            try:
                await session.send_audio(item)
            finally:
                self.forwarding = False

    async def _relay(self, session: Session) -> tuple[int, str]:
        emit, language = self.frontend.emit, None
        async for event in session.events():
            if isinstance(event, SessionCreated):
                language = event.language
                await emit("session-started", None, self.sid)
                await emit("transcript-message", {
                    "message_type": "session_started", "session_id": event.session_id,
                    "config": {"sample_rate": event.sample_rate, "model_id": event.model,
                               "language_code": event.language}}, self.sid)
            elif isinstance(event, ab.Transcript):
                for message in transcript_messages(event, language):
                    await emit("transcript-message", message, self.sid)
            elif isinstance(event, SessionWarning):
                await emit("session-warning", {"code": event.code, "message": event.message},
                           self.sid)
            elif isinstance(event, SessionError):
                await emit("session-error", {"error": event.error.message,
                                             "code": event.error.close_code}, self.sid)
                return event.error.close_code, event.error.reason
            elif isinstance(event, SessionEnded):
                return 1000, "session ended"
        return 1000, "session ended"


def _check_shape(kind: Any, data: Any) -> None:
    """What python-socketio indexes without checking: raise ValueError instead."""
    if kind in (packet_types.EVENT, packet_types.BINARY_EVENT):
        if not (isinstance(data, list) and data and isinstance(data[0], str)):
            raise ValueError("an event must be a JSON array starting with the event name")
    elif kind in (packet_types.ACK, packet_types.BINARY_ACK):
        if not isinstance(data, list):
            raise ValueError("an acknowledgement must be a JSON array")
    elif kind == packet_types.CONNECT and data is not None and not isinstance(data, dict):
        raise ValueError("connect data must be a JSON object")
    elif kind not in (packet_types.CONNECT, packet_types.DISCONNECT):
        raise ValueError(f"unknown packet type {kind!r:.20}")


def bounded_packet_class(max_bytes: int) -> type[Packet]:
    """Socket.IO packets whose JSON is parsed by `loads_bounded` (size and depth limits).

    A packet that does not parse becomes the event `INVALID_EVENT` carrying the cause (or, for
    a CONNECT, auth data naming it), so that the client is told instead of the server logging
    a traceback."""

    class BoundedJson:
        dumps = staticmethod(json.dumps)

        @staticmethod
        def loads(text: str | bytes, *args: Any, **kwargs: Any) -> Any:
            return loads_bounded(text, max_bytes=max_bytes)

    class BoundedPacket(Packet):  # type: ignore[misc]
        json = BoundedJson

        def decode(self, encoded_packet: Any) -> int:
            try:
                attachments = int(super().decode(encoded_packet))
                _check_shape(getattr(self, "packet_type", None), getattr(self, "data", None))
                return attachments
            except (BadJson, ValueError) as exc:  # python-socketio raises ValueError too
                cause = str(exc)[:200]
                kind: Any = getattr(self, "packet_type", None)
                data: Any = {INVALID_EVENT: cause}
                if kind != packet_types.CONNECT:
                    kind, data, self.id = packet_types.EVENT, [INVALID_EVENT, cause], None
                self.packet_type, self.data, self.namespace = kind, data, None
                return 0

    return BoundedPacket


class _LivelySocket(engineio.async_socket.AsyncSocket):  # type: ignore[misc]
    """An engine.io socket whose ping deadline only runs while the server reads it.

    With ``async_handlers=False`` a handler that awaits (an audio chunk waiting for a slow
    provider: backpressure) stops the reading of its socket, so the client's pong waits behind
    the events it already sent. While a handler runs the client counts as alive, and the
    deadline of a ping sent meanwhile restarts when reading resumes (as for the WebSocket
    keepalive, `app.protocols`)."""

    busy = 0

    async def check_ping_timeout(self) -> bool:
        if self.busy and not self.closed:
            return True
        return bool(await super().check_ping_timeout())

    async def _send_ping(self) -> None:
        await super()._send_ping()
        # engine.io pings again only once the pong is read, and the client drops a server
        # that stops pinging: while we are not reading, go on pinging.
        while True:
            await asyncio.sleep(self.server.ping_interval)
            if not (self.busy and self.last_ping) or self.closing or self.closed:
                return
            await self.send(engineio.packet.Packet(engineio.packet.PING))


class _EngineIOServer(engineio.AsyncServer):  # type: ignore[misc]
    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        socket = self.sockets.get(args[0]) if args else None
        if event == "connect" and socket is not None:
            socket.__class__ = _LivelySocket  # created by engine.io just before "connect"
        if event != "message" or not isinstance(socket, _LivelySocket):
            return await super()._trigger_event(event, *args, **kwargs)
        socket.busy += 1
        try:
            return await super()._trigger_event(event, *args, **kwargs)
        finally:
            socket.busy -= 1
            if socket.last_ping:  # a ping is out: its deadline runs from now
                socket.last_ping = time.time()


class _AsyncServer(socketio.AsyncServer):  # type: ignore[misc]
    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return _EngineIOServer


class SocketIOFrontend:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        max_bytes = gateway.settings.max_frame_bytes
        buffer = max_bytes * 4 // 3 + 4096  # an audio-chunk of max_frame_bytes, in base64
        # async_handlers=False: one client's events run in order, and awaiting in a handler
        # stops reading that client (backpressure) without touching the others.
        settings = gateway.settings
        self.sio = _AsyncServer(
            async_mode="asgi", cors_allowed_origins="*", async_handlers=False,
            max_http_buffer_size=buffer, serializer=bounded_packet_class(buffer),
            # engine.io's in-band keepalive, on the same settings as the WebSocket one
            ping_interval=settings.ws_ping_interval or 25.0,
            ping_timeout=settings.ws_ping_timeout or 20.0)
        self.clients: dict[str, _Client] = {}
        self.sio.on("connect", self.connect)
        self.sio.on("disconnect", self.disconnect)
        self.sio.on("start-session", self.start_session)
        self.sio.on("audio-chunk", self.audio_chunk)
        self.sio.on("stop-session", self.stop_session)
        self.sio.on(INVALID_EVENT, self.invalid_packet)

    async def emit(self, event: str, data: Any, sid: str) -> None:
        with contextlib.suppress(Exception):  # the client may be gone already
            await self.sio.emit(event, data, to=sid)

    async def invalid_packet(self, sid: str, cause: Any = None) -> None:
        await self.emit("session-error", {"error": f"invalid packet ignored: {cause}",
                                          "code": 4400}, sid)

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if isinstance(auth, dict) and INVALID_EVENT in auth:
            self.gateway.metrics.session_error(4400)
            raise socketio.exceptions.ConnectionRefusedError(
                f"invalid connect packet: {auth[INVALID_EVENT]}",
                {"status": 400, "code": 4400,
                 "message": f"invalid connect packet: {auth[INVALID_EVENT]}"})
        query = {k: v for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        headers = {"authorization": environ.get("HTTP_AUTHORIZATION", ""),
                   "x-api-key": environ.get("HTTP_X_API_KEY", "")}
        secret = key_from_request(headers, {k: v[-1] for k, v in query.items()})
        if secret is None and isinstance(auth, dict):
            for name in ("apiKey", "api_key", "x-api-key", "token"):
                if isinstance(auth.get(name), str) and auth[name]:
                    secret = auth[name]
                    break
        scope = environ.get("asgi.scope") or {}
        client = scope.get("client")
        try:
            principal = await self.gateway.authenticate(secret, client[0] if client else None)
        except GatewayError as error:
            self.gateway.metrics.session_error(error.close_code)
            raise socketio.exceptions.ConnectionRefusedError(
                error.message, {"status": error.http_status, "code": error.close_code,
                                "message": error.message}) from None
        self.clients[sid] = _Client(principal, environ.get("HTTP_ORIGIN"), query)

    async def disconnect(self, sid: str, reason: Any = None) -> None:
        client = self.clients.pop(sid, None)
        if client is not None and client.session is not None and client.session.task:
            client.session.task.cancel()

    async def start_session(self, sid: str, data: Any = None) -> None:
        client = self.clients.get(sid)
        if client is None:
            return
        if client.session is not None:
            await self.emit("session-error", {"error": "a session is already running; emit "
                                                       "stop-session first"}, sid)
            return
        data = data if isinstance(data, dict) else {}
        params = {k: v for k, v in client.query.items() if k in ("model", "language")}
        for name, value in (("sample_rate", data.get("sampleRate", data.get("sample_rate"))),
                            ("model", data.get("model")), ("language", data.get("language"))):
            if value is not None:
                params[name] = [str(value)]
        params.update(output_format=["verbose_json"], interim_results=["true"])
        try:
            request = parse_session_params(params,
                                           default_model=self.gateway.settings.default_model)
        except GatewayError as error:
            await self.emit("session-error", {"error": error.message,
                                              "code": error.close_code}, sid)
            await self.emit("session-closed", {"code": error.close_code,
                                               "reason": error.reason}, sid)
            return
        client.session = _SocketSession(self, sid, request, client)
        client.session.start()

    async def audio_chunk(self, sid: str, data: Any = None) -> None:
        client = self.clients.get(sid)
        session = client.session if client else None
        if session is None:
            await self.emit("session-error", {"error": "no session: emit start-session "
                                                       "before audio-chunk"}, sid)
            return
        audio = data.get("audio_base_64") if isinstance(data, dict) else None
        try:
            pcm = base64.b64decode(audio or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            await self.emit("session-error", {"error": "audio-chunk: audio_base_64 is not "
                                                       "valid base64; chunk ignored"}, sid)
            return
        rate = data.get("sample_rate") if isinstance(data, dict) else None
        if rate is not None and rate != session.rate:
            await self.emit("session-error", {
                "error": f"audio-chunk: sample_rate {rate} differs from the session's "
                         f"{session.rate} (start-session sampleRate); chunk ignored"}, sid)
            return
        if pcm:
            await session.put(pcm)

    async def stop_session(self, sid: str, data: Any = None) -> None:
        client = self.clients.get(sid)
        if client is None or client.session is None:
            await self.emit("session-error", {"error": "no session to stop"}, sid)
            return
        await client.session.put(None)


def asgi_app(gateway: Gateway) -> ASGIApp:
    """The Socket.IO endpoint, mounted at ``/api/stt-realtime-socket`` by the route table."""
    app: ASGIApp = socketio.ASGIApp(SocketIOFrontend(gateway).sio, socketio_path=SOCKETIO_PATH)
    return app
