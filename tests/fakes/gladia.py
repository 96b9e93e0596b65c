"""A fake of Gladia live v2: ``POST /v2/live`` then the WebSocket URL it returns.

Judges like the real service: ``x-gladia-key`` on the POST (401), a strictly validated init
body (unknown properties and unsupported values are a 400, like Gladia's validation errors),
a valid session token on the WebSocket (4401 otherwise). Answers partial and final
``transcript`` messages per utterance id, ``speech_start``/``speech_end``, and on
``stop_recording`` the remaining finals, ``end_recording`` and ``end_session``. Endpointing:
a sentence end, or ``endpointing`` seconds of digital silence, closes the open utterance.
https://docs.gladia.io/api-reference/v2/live/init, https://docs.gladia.io/asyncapi.yaml
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes._server import BECKETT_SECONDS, AsgiFake, Inbox, Latency, Pacer, SessionLog
from tests.fakes.recognizer import FakeWord, Recognizer
from tests.speech import BECKETT_TEXT

BODY_KEYS = {"encoding", "bit_depth", "sample_rate", "channels", "model", "endpointing",
             "maximum_duration_without_endpointing", "language_config", "pre_processing",
             "realtime_processing", "post_processing", "messages_config", "callback",
             "callback_config", "custom_metadata"}
MESSAGE_FLAGS = {"receive_partial_transcripts", "receive_final_transcripts",
                 "receive_speech_events", "receive_pre_processing_events",
                 "receive_realtime_processing_events", "receive_post_processing_events",
                 "receive_acknowledgments", "receive_errors", "receive_lifecycle_events"}


def validate(body: Any) -> list[str]:
    """Gladia-style validation messages for an init body (empty: valid)."""
    if not isinstance(body, dict):
        return ["body must be an object"]
    errors = [f"property {k} should not exist" for k in body if k not in BODY_KEYS]
    checks = {"encoding": {"wav/pcm", "wav/alaw", "wav/ulaw"}, "bit_depth": {8, 16, 24, 32},
              "sample_rate": {8000, 16000, 32000, 44100, 48000}, "model": {"solaria-1"}}
    for key, allowed in checks.items():
        if key in body and body[key] not in allowed:
            errors.append(f"{key} must be one of: {sorted(map(str, allowed))}")
    if not 1 <= int(body.get("channels", 1)) <= 8:
        errors.append("channels must not be greater than 8")
    if not 0.01 <= float(body.get("endpointing", 0.05)) <= 10:
        errors.append("endpointing must not be less than 0.01")
    messages = body.get("messages_config") or {}
    errors += [f"messages_config.property {k} should not exist" for k in messages
               if k not in MESSAGE_FLAGS]
    vocabulary = (body.get("realtime_processing") or {}).get("custom_vocabulary_config")
    if vocabulary is not None and not vocabulary.get("vocabulary"):
        errors.append("custom_vocabulary_config.vocabulary should not be empty")
    return errors


class FakeGladia(AsgiFake):
    """Faults: ``"rate_limit"`` (429 on the POST), ``"server_error"`` (close 1011 after the
    first final), ``"malformed"`` (a burst of non-JSON after the first final),
    ``"garbage_once"`` (one non-JSON message and one ``transcript`` without its data, once),
    ``"stall"`` (ignores stop_recording), ``"no_url"`` (a POST answer without ``url``).

    `speed`: audio seconds transcribed per second (None: at once). `latency`: seconds
    between hearing audio and answering about it (order kept). `public_port`: the port put
    in the WebSocket URL the POST returns (a proxy in front of the fake)."""

    def __init__(self, *, api_key: str = "gladia-test-key", text: str = BECKETT_TEXT,
                 speech_seconds: float = BECKETT_SECONDS, fault: str | None = None,
                 speed: float | None = None, latency: float = 0.0) -> None:
        super().__init__()
        self.speed = speed
        self.latency = latency
        self.public_port: int | None = None
        self.api_key = api_key
        self.text = text
        self.speech_seconds = speech_seconds
        self.fault = fault
        self.created: dict[str, dict[str, Any]] = {}  # token -> init body
        self.bodies: list[Any] = []

    def app(self) -> Any:
        return Starlette(routes=[Route("/v2/live", self.init, methods=["POST"]),
                                 WebSocketRoute("/v2/live", self.live)])

    async def init(self, request: Request) -> Response:
        if request.headers.get("x-gladia-key") != self.api_key:
            return JSONResponse({"statusCode": 401, "message": "Invalid or missing API key"},
                                401)
        if self.fault == "rate_limit":
            return JSONResponse({"statusCode": 429, "message": "Too many concurrent sessions"},
                                429, headers={"retry-after": "5"})
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        self.bodies.append(body)
        errors = validate(body)
        if errors:
            return JSONResponse({"statusCode": 400, "message": "Bad Request",
                                 "validation_errors": errors}, 400)
        session_id, token = str(uuid.uuid4()), uuid.uuid4().hex
        self.created[token] = {**body, "id": session_id}
        answer: dict[str, Any] = {"id": session_id,
                                  "created_at": datetime.now(UTC).isoformat()}
        if self.fault != "no_url":
            port = self.public_port or self.port
            answer["url"] = f"ws://127.0.0.1:{port}/v2/live?token={token}"
        return JSONResponse(answer, 201)

    async def live(self, ws: WebSocket) -> None:
        body = self.created.pop(ws.query_params.get("token", ""), None)
        await ws.accept()
        if body is None:
            await ws.close(4401, "Invalid or expired token")
            return
        log = SessionLog("/v2/live", dict(ws.headers), {"token": ["*"]})
        self.sessions.append(log)
        try:
            await _Session(self, ws, log, body).run()
        except WebSocketDisconnect as exc:
            log.close_code = exc.code
        finally:
            log.closed.set()


class _Session:
    def __init__(self, fake: FakeGladia, ws: WebSocket, log: SessionLog,
                 body: dict[str, Any]) -> None:
        self.fake, self.ws, self.log, self.body = fake, ws, log, body
        self.flags = body.get("messages_config") or {}
        self.endpointing = float(body.get("endpointing", 0.05))
        self.recognizer = Recognizer(fake.text, fake.speech_seconds, int(body["sample_rate"]))
        self.utterance: str | None = None
        self.finals = 0
        self.pacer = Pacer(fake.speed)
        self.out = Latency(ws.send_text, fake.latency)

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        await self.out.send(json.dumps({
            "session_id": self.body["id"], "created_at": datetime.now(UTC).isoformat(),
            "type": kind, "data": data}))

    async def run(self) -> None:
        if self.flags.get("receive_lifecycle_events"):
            await self.send("start_session", {})
        inbox = Inbox(self.ws.receive)
        try:
            await self.serve(inbox)
        finally:
            await inbox.aclose()
            await self.out.aclose()

    async def serve(self, inbox: Inbox) -> None:
        while True:
            message = await inbox.get()
            if message.get("type") == "websocket.disconnect":
                self.log.close_code = message.get("code")
                return
            if message.get("bytes") is not None:
                rate = int(self.body["sample_rate"])
                await self.pacer.hold(len(message["bytes"]) / (2 * rate))
                await self.audio(message["bytes"])
                continue
            parsed = json.loads(message.get("text") or "{}")
            self.log.messages.append(parsed)
            if parsed.get("type") == "stop_recording":
                if self.fake.fault == "stall":
                    continue
                await self.end_utterance()
                if self.flags.get("receive_lifecycle_events"):
                    await self.send("end_recording",
                                    {"recording_duration": round(self.recognizer.received, 3)})
                    await self.send("end_session", {})
                await self.out.flush()
                await self.ws.close(1000)
                return

    async def audio(self, pcm: bytes) -> None:
        self.log.frames += 1
        self.log.audio_bytes += len(pcm)
        for word in self.recognizer.feed(pcm):
            if self.utterance is None:
                self.utterance = str(uuid.uuid4())
                if self.flags.get("receive_speech_events"):
                    await self.send("speech_start", {"time": word.start, "channel": 0})
            if word.ends_sentence:
                await self.end_utterance(word)
            elif self.flags.get("receive_partial_transcripts"):
                await self.transcript(self.recognizer.open_words(), final=False)
        if self.utterance and self.recognizer.silence_run >= self.endpointing:
            await self.end_utterance()

    async def end_utterance(self, through: FakeWord | None = None) -> None:
        words = self.recognizer.close_segment(through)
        if self.utterance is None or not words:
            return
        await self.transcript(words, final=True)
        if self.flags.get("receive_speech_events"):
            await self.send("speech_end", {"time": words[-1].end, "channel": 0})
        self.utterance = None
        self.finals += 1
        if self.fake.fault == "server_error":
            await self.out.flush()
            await self.ws.close(1011, "Internal error")
            raise WebSocketDisconnect(1011)
        if self.fake.fault == "malformed":
            for _ in range(6):
                await self.out.send("<<not json>>")
        if self.fake.fault == "garbage_once" and self.finals == 1:
            await self.out.send("<<not json>>")
            await self.send("transcript", {})

    async def transcript(self, words: list[FakeWord], *, final: bool) -> None:
        if final and not self.flags.get("receive_final_transcripts", True):
            return
        await self.send("transcript", {"id": self.utterance, "is_final": final, "utterance": {
            "text": " ".join(w.text for w in words), "start": words[0].start,
            "end": words[-1].end, "language": "en", "channel": 0, "confidence": 0.93,
            "words": [{"word": (" " if i else "") + w.text, "start": w.start, "end": w.end,
                       "confidence": 0.93} for i, w in enumerate(words)]}})
