"""A fake of AssemblyAI Universal Streaming v3 (``wss://streaming.assemblyai.com/v3/ws``).

Judges like the real service: the raw key in ``Authorization`` (no scheme; else ``Error``
1008 and close 1008), required ``speech_model`` and ``sample_rate`` (HTTP 400), audio frames
of 50-1000 ms sent no faster than real time (``Error`` 3007, close 3007), known message types
(3006). Answers ``Begin``, partial ``Turn``s, an unformatted end-of-turn followed by its
formatted duplicate (``format_turns=true``; inline for u3-rt-pro), ``Termination``.
https://www.assemblyai.com/docs/speech-to-text/universal-streaming/message-sequence
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from tests.fakes._server import (
    BECKETT_SECONDS,
    Latency,
    SessionLog,
    WsFake,
    http_error,
    record_text,
)
from tests.fakes.recognizer import FakeWord, Recognizer, join
from tests.speech import BECKETT_TEXT

MODELS = {"universal-streaming-english", "universal-streaming-multilingual", "u3-rt-pro"}
# Audio may run this far ahead of the wall clock before 3007 "transmission rate exceeded".
RATE_TOLERANCE = 0.5


class FakeAssemblyAI(WsFake):
    """Faults: ``"too_many"`` (3009 at start), ``"server_error"`` (3005 after the first turn),
    ``"malformed"`` (non-JSON text after every frame once turns flow), ``"garbage_once"``
    (one non-JSON message and one ``Turn`` without its fields), ``"stall"`` (ignores
    Terminate).

    `clock_scale`: the fake's "real time" runs this many times faster than the wall clock
    (the pacing check only), for long recordings sent by an adapter paced the same way.
    `latency`: seconds between hearing audio and answering about it (order kept)."""

    def __init__(self, *, api_key: str = "aai-test-key", text: str = BECKETT_TEXT,
                 speech_seconds: float = BECKETT_SECONDS, fault: str | None = None,
                 rate_tolerance: float = RATE_TOLERANCE, clock_scale: float = 1.0,
                 latency: float = 0.0) -> None:
        super().__init__()
        self.latency = latency
        self.clock_scale = clock_scale
        self.api_key = api_key
        self.text = text
        self.speech_seconds = speech_seconds
        self.fault = fault
        self.rate_tolerance = rate_tolerance

    def judge(self, request: Request) -> Response | None:
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(request.path)
        if parts.path != "/v3/ws":
            return http_error(404, "Not Found")
        query = parse_qs(parts.query)
        if query.get("speech_model", ["?"])[0] not in MODELS:
            return http_error(400, "speech_model is required and must be a streaming model")
        if "sample_rate" not in query:
            return http_error(400, "sample_rate is required")
        return None

    async def session(self, ws: ServerConnection, log: SessionLog) -> None:
        await _Session(self, ws, log).run()


class _Session:
    def __init__(self, fake: FakeAssemblyAI, ws: ServerConnection, log: SessionLog) -> None:
        self.fake, self.ws, self.log = fake, ws, log
        q = log.query
        self.model = q["speech_model"][0]
        self.rate = int(q["sample_rate"][0])
        self.format_turns = q.get("format_turns", ["false"])[0].lower() == "true"
        self.speaker_labels = q.get("speaker_labels", ["false"])[0].lower() == "true"
        self.recognizer = Recognizer(fake.text, fake.speech_seconds, self.rate)
        self.turn_order = 0
        self.turns_sent = 0
        self.garbage_sent = False
        self.out = Latency(ws.send, fake.latency)
        self.first_audio: float | None = None
        self.started = time.monotonic()

    async def error(self, code: int, text: str) -> None:
        await self.send({"type": "Error", "error_code": code, "error": text})
        await self.out.flush()
        await self.ws.close(code, text[:120])

    async def run(self) -> None:
        try:
            await self.serve()
        finally:
            await self.out.aclose()

    async def serve(self) -> None:
        if self.log.headers.get("authorization") != self.fake.api_key:
            await self.error(1008, "Unauthorized connection: Invalid API key")
            return
        if self.fake.fault == "too_many":
            await self.error(3009, "Too many concurrent sessions")
            return
        await self.send({"type": "Begin", "id": str(uuid.uuid4()),
                         "expires_at": int(time.time()) + 3600})
        while True:
            async with asyncio.timeout(30):
                raw = await self.ws.recv()
            if isinstance(raw, bytes):
                if not await self.audio(raw):
                    return
                continue
            try:
                message = record_text(self.log, raw)
            except ValueError:
                await self.error(3006, "Invalid JSON")
                return
            kind = message.get("type")
            if kind == "ForceEndpoint":
                await self.end_turn()
            elif kind == "KeepAlive":
                continue
            elif kind == "Terminate":
                if self.fake.fault == "stall":  # never answer; wait for the client to go
                    await self.ws.wait_closed()
                    return
                await self.end_turn()
                await self.send({"type": "Termination",
                                 "audio_duration_seconds": round(self.recognizer.received, 3),
                                 "session_duration_seconds": round(
                                     time.monotonic() - self.started, 3)})
                await self.out.flush()
                await self.ws.close(1000)
                return
            else:
                await self.error(3006, f"Invalid message type: {kind}")
                return

    async def audio(self, pcm: bytes) -> bool:
        now = time.monotonic()
        self.first_audio = self.first_audio or now
        duration_ms = len(pcm) / (2 * self.rate) * 1000
        self.log.frames += 1
        self.log.audio_bytes += len(pcm)
        if not 50 <= duration_ms <= 1000:
            await self.error(3007, f"Input Duration Violation: {duration_ms:.0f} ms; audio "
                                   "must be between 50 and 1000 ms")
            return False
        elapsed = (now - self.first_audio) * self.fake.clock_scale
        ahead = self.recognizer.received + duration_ms / 1000 - elapsed
        if ahead > self.fake.rate_tolerance:
            await self.error(3007, "Audio Transmission Rate Exceeded: send audio in real time")
            return False
        for word in self.recognizer.feed(pcm):
            if word.ends_sentence:
                await self.end_turn(word)
            else:
                await self.turn(self.recognizer.words[self.recognizer.closed:
                                                      self.recognizer.words.index(word) + 1],
                                end_of_turn=False)
        if self.turns_sent and self.fake.fault == "server_error":
            await self.error(3005, "Internal server error")
            return False
        if self.turns_sent and self.fake.fault == "malformed":
            await self.out.send("not json {")
        if self.turns_sent and self.fake.fault == "garbage_once" and not self.garbage_sent:
            self.garbage_sent = True
            await self.out.send("not json {")
            await self.send({"type": "Turn", "words": [{"text": "x"}]})
        return True

    async def end_turn(self, through: FakeWord | None = None) -> None:
        words = self.recognizer.close_segment(through)
        if not words:
            return
        if self.model == "u3-rt-pro":
            await self.turn(words, end_of_turn=True, formatted=True)
        else:
            await self.turn(words, end_of_turn=True, formatted=False)
            if self.format_turns:
                await self.turn(words, end_of_turn=True, formatted=True)
        self.turn_order += 1

    async def turn(self, words: list[FakeWord], *, end_of_turn: bool,
                   formatted: bool = False) -> None:
        self.turns_sent += 1
        # Partials: `transcript` holds only finalized words; the newest word is still open.
        final_words = words if end_of_turn else words[:-1]
        message: dict[str, Any] = {
            "type": "Turn", "turn_order": self.turn_order, "turn_is_formatted": formatted,
            "end_of_turn": end_of_turn, "transcript": join(final_words, formatted),
            "end_of_turn_confidence": 0.9 if end_of_turn else 0.1,
            "words": [self.word(w, i < len(final_words), formatted)
                      for i, w in enumerate(words)],
            "utterance": join(words, True) if end_of_turn else "",
        }
        if self.speaker_labels:
            message["speaker_label"] = "A"
        await self.send(message)

    def word(self, w: FakeWord, final: bool, formatted: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"start": int(w.start * 1000), "end": int(w.end * 1000),
                               "text": w.text if formatted else w.bare, "confidence": 0.95,
                               "word_is_final": final}
        if self.speaker_labels:
            out["speaker"] = "A"
        return out

    async def send(self, message: dict[str, Any]) -> None:
        await self.out.send(json.dumps(message))
