"""A fake of OpenAI's Realtime transcription sessions (``wss://api.openai.com/v1/realtime``)
plus the ``/v1/audio/transcriptions`` REST API (whisper-1), on one port like the real host.

Judges like the real service: ``Authorization: Bearer <key>`` (401), ``intent=transcription``,
a ``session.update`` of ``type: transcription`` with ``audio/pcm`` at **24000 Hz** and a known
transcription model (``invalid_value`` error otherwise), commits of at least 100 ms
(``input_audio_buffer_commit_empty``). The recognizer hears the appended audio at 24 kHz, so
audio sent at another rate yields the wrong words. With server VAD it answers like the
gpt-4o-transcribe family: ``speech_started``, ``speech_stopped``, ``committed``, then
transcription deltas and ``completed`` per item.
https://platform.openai.com/docs/guides/realtime-transcription
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes._server import BECKETT_SECONDS, AsgiFake, Inbox, Pacer, SessionLog
from tests.fakes.recognizer import FakeWord, Recognizer, join
from tests.fakes.transcriptions import TranscriptionsFake
from tests.speech import BECKETT_TEXT

REALTIME_MODELS = {"gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-realtime-whisper",
                   "gpt-live-transcribe", "whisper-1"}
NO_VAD_MODELS = {"gpt-realtime-whisper", "gpt-live-transcribe"}  # turn_detection must be null
RATE = 24000


class FakeOpenAI(AsgiFake):
    """Faults: ``"rate_limit"`` (429 handshake), ``"server_error"`` (a ``server_error`` event
    and close 1011 after the first transcript), ``"malformed"`` (a burst of non-JSON after
    the first transcript), ``"garbage_once"`` (one non-JSON message and one event with a
    mistyped field, once), ``"stall"`` (never answers a commit).

    `speed`: audio seconds transcribed per second (None: at once); appended audio is
    buffered and worked through at that pace."""

    def __init__(self, *, api_key: str = "sk-test-key", text: str = BECKETT_TEXT,
                 speech_seconds: float = BECKETT_SECONDS, fault: str | None = None,
                 speed: float | None = None) -> None:
        super().__init__()
        self.speed = speed
        self.api_key = api_key
        self.text = text
        self.speech_seconds = speech_seconds
        self.fault = fault
        self.rest = TranscriptionsFake(api_key, {"whisper-1", "gpt-4o-transcribe"},
                                       prefix="/v1", fault=fault)

    @property
    def base_url(self) -> str:
        return f"{self.http_url}/v1"

    def stopping(self) -> None:
        self.rest.released.set()

    def app(self) -> Any:
        return Starlette(routes=[WebSocketRoute("/v1/realtime", self.realtime),
                                 *self.rest.routes()])

    async def realtime(self, ws: WebSocket) -> None:
        log = SessionLog("/v1/realtime", dict(ws.headers),
                         {k: ws.query_params.getlist(k) for k in ws.query_params})
        if ws.headers.get("authorization") != f"Bearer {self.api_key}":
            await ws.send_denial_response(JSONResponse(
                {"error": {"message": "Incorrect API key provided", "type":
                           "invalid_request_error", "code": "invalid_api_key"}}, 401))
            return
        if self.fault == "rate_limit":
            await ws.send_denial_response(JSONResponse(
                {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
                429, headers={"retry-after": "4"}))
            return
        if ws.query_params.get("intent") != "transcription":
            await ws.send_denial_response(JSONResponse(
                {"error": {"message": "missing intent or model",
                           "code": "invalid_request_error"}}, 400))
            return
        await ws.accept()
        self.sessions.append(log)
        try:
            await _Session(self, ws, log).run()
        except WebSocketDisconnect as exc:
            log.close_code = exc.code
        finally:
            log.closed.set()


class _Session:
    def __init__(self, fake: FakeOpenAI, ws: WebSocket, log: SessionLog) -> None:
        self.fake, self.ws, self.log = fake, ws, log
        self.recognizer = Recognizer(fake.text, fake.speech_seconds, RATE)
        self.configured = False
        self.server_vad = True
        self.uncommitted = 0.0
        self.item: str | None = None  # the item VAD opened (speech in progress)
        self.previous: str | None = None
        self.completed = 0
        self.pacer = Pacer(fake.speed)

    async def event(self, kind: str, **fields: Any) -> None:
        await self.ws.send_text(json.dumps({"type": kind, "event_id": f"event_{uuid.uuid4().hex}",
                                            **fields}))

    async def error(self, code: str, message: str, param: str | None = None,
                    kind: str = "invalid_request_error") -> None:
        await self.event("error", error={"type": kind, "code": code, "message": message,
                                         "param": param, "event_id": None})

    async def run(self) -> None:
        inbox = Inbox(self.ws.receive_text)
        try:
            await self.serve(inbox)
        finally:
            await inbox.aclose()

    async def serve(self, inbox: Inbox) -> None:
        await self.event("session.created", session={"type": "transcription",
                                                     "id": f"sess_{uuid.uuid4().hex}"})
        while True:
            raw = await inbox.get()
            message = json.loads(raw)
            self.log.messages.append({"type": message.get("type")})
            kind = message.get("type")
            if kind == "session.update":
                await self.update(message.get("session") or {})
            elif kind == "input_audio_buffer.append":
                pcm = base64.b64decode(message["audio"])
                await self.pacer.hold(len(pcm) / (2 * RATE))
                await self.append(pcm)
            elif kind == "input_audio_buffer.commit":
                if self.fake.fault == "stall":
                    continue
                if self.uncommitted < 0.1:
                    await self.error("input_audio_buffer_commit_empty",
                                     "Error committing input audio buffer: buffer too small. "
                                     f"Expected at least 100ms of audio, but buffer only has "
                                     f"{self.uncommitted * 1000:.2f}ms of audio.")
                    continue
                await self.commit(vad=False)
            else:
                await self.error("invalid_value", f"Invalid value: '{kind}'", "type")

    async def update(self, session: dict[str, Any]) -> None:
        audio_in = (session.get("audio") or {}).get("input") or {}
        fmt = audio_in.get("format") or {}
        model = (audio_in.get("transcription") or {}).get("model")
        if session.get("type") != "transcription":
            await self.error("invalid_value", "session.type must be transcription",
                             "session.type")
        elif fmt.get("type") != "audio/pcm" or fmt.get("rate") != RATE:
            await self.error("invalid_value", "Only a 24kHz sample rate is supported",
                             "session.audio.input.format.rate")
        elif model not in REALTIME_MODELS:
            await self.error("invalid_value", f"Invalid transcription model: {model}",
                             "session.audio.input.transcription.model")
        elif model in NO_VAD_MODELS and audio_in.get("turn_detection") is not None:
            await self.error("invalid_value", f"{model} does not support turn detection",
                             "session.audio.input.turn_detection")
        else:
            self.configured = True
            self.server_vad = audio_in.get("turn_detection") is not None
            await self.event("session.updated", session=session)

    async def append(self, pcm: bytes) -> None:
        self.log.frames += 1
        self.log.audio_bytes += len(pcm)
        self.uncommitted += len(pcm) / (2 * RATE)
        for word in self.recognizer.feed(pcm):
            if not self.server_vad:
                continue
            if self.item is None:
                self.item = f"item_{uuid.uuid4().hex[:12]}"
                await self.event("input_audio_buffer.speech_started", item_id=self.item,
                                 audio_start_ms=int(max(0.0, word.start - 0.3) * 1000))
            if word.ends_sentence:
                await self.event("input_audio_buffer.speech_stopped", item_id=self.item,
                                 audio_end_ms=int(word.end * 1000))
                await self.commit(vad=True, through=word)

    async def commit(self, *, vad: bool, through: FakeWord | None = None) -> None:
        item = self.item or f"item_{uuid.uuid4().hex[:12]}"
        self.item = None
        words = self.recognizer.close_segment(through)
        await self.event("input_audio_buffer.committed", item_id=item,
                         previous_item_id=self.previous)
        self.previous = item
        self.uncommitted = 0.0
        await self.transcribe(item, words)

    async def transcribe(self, item: str, words: list[FakeWord]) -> None:
        # gpt-4o-transcribe streams its deltas only after the commit.
        for i, word in enumerate(words):
            await self.event("conversation.item.input_audio_transcription.delta", item_id=item,
                             content_index=0, delta=(" " if i else "") + word.text)
        seconds = round(words[-1].end - words[0].start, 3) if words else 0.0
        await self.event("conversation.item.input_audio_transcription.completed", item_id=item,
                         content_index=0, transcript=join(words),
                         usage={"type": "duration", "seconds": seconds})
        self.completed += 1
        if self.fake.fault == "server_error":
            await self.error("server_error", "The server had an error", kind="server_error")
            await self.ws.close(1011)
            raise WebSocketDisconnect(1011)
        if self.fake.fault == "malformed":
            for _ in range(6):
                await self.ws.send_text("{not json")
        if self.fake.fault == "garbage_once" and self.completed == 1:
            await self.ws.send_text("{not json")
            await self.event("input_audio_buffer.speech_started", item_id="x",
                             audio_start_ms="soon")
