"""A fake of Deepgram's live streaming API (``wss://api.deepgram.com/v1/listen``).

Judges like the real service: ``Authorization: Token <key>`` (401 + ``dg-error`` otherwise),
a known ``model``, ``sample_rate`` with ``encoding``; closes 1011 ``NET-0001`` after
`idle_timeout` seconds without audio or text, 1008 ``DATA-0000`` on an empty binary frame.
Answers with interim results, ``is_final`` pieces, ``speech_final`` at sentence ends,
``UtteranceEnd``, ``SpeechStarted``, ``from_finalize`` results and a closing ``Metadata``.
https://developers.deepgram.com/reference/speech-to-text/listen-streaming
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Container
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from tests.fakes._server import (
    BECKETT_SECONDS,
    Inbox,
    Pacer,
    SessionLog,
    WsFake,
    http_error,
    record_text,
)
from tests.fakes.recognizer import FakeWord, Recognizer, join
from tests.speech import BECKETT_TEXT

MODELS = {"nova-3", "nova-3-general", "nova-3-medical", "nova-2", "nova-2-general",
          "nova-2-meeting", "nova-2-phonecall", "nova-2-medical"}
PIECE_WORDS = 3  # an is_final piece every few words, like Deepgram's windows


class FakeDeepgram(WsFake):
    """Faults: ``"rate_limit"`` (429), ``"server_error"`` (503), ``"drop"`` (close 1011
    NET-0000 after the first result), ``"data_error"`` (close 1008 DATA-0000 after the first
    audio), ``"malformed"`` (non-JSON text frames, one per audio frame once results flow),
    ``"garbage_once"`` (one non-JSON frame and one ``Results`` without its fields, once),
    ``"stall"`` (never answer CloseStream), ``"drop_after_piece"`` (close 1011 NET-0000 right
    after the first ``is_final`` piece that is not ``speech_final``).

    `speed`: audio seconds transcribed per second (None: at once). Deepgram buffers what a
    fast client sends and works through it; results for a backlog keep coming after
    ``CloseStream`` until the end of the audio is reached."""

    def __init__(self, *, api_key: str = "dg-test-key", text: str = BECKETT_TEXT,
                 speech_seconds: float = BECKETT_SECONDS, idle_timeout: float = 10.0,
                 fault: str | None = None, echo: bool = False,
                 speed: float | None = None, reference: bytes | None = None) -> None:
        super().__init__()
        self.speed = speed
        # The recording `text` is read from: a session that starts mid-recording (a client
        # resuming after a reconnect) hears only the words after that point.
        self.reference = reference
        self.echo = echo  # benchmark mode: one interim result per frame, text "b<bytes so far>"
        self.api_key = api_key
        self.text = text
        self.speech_seconds = speech_seconds
        self.idle_timeout = idle_timeout
        self.fault = fault

    def judge(self, request: Request) -> Response | None:
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(request.path)
        if parts.path != "/v1/listen":
            return http_error(404, "Not Found")
        return self.refuse(request, parse_qs(parts.query), MODELS,
                           "No such model/language/tier combination")

    def refuse(self, request: Request, query: dict[str, list[str]], models: Container[str],
               unknown_model: str) -> Response | None:
        """What /v1/listen and /v2/listen both refuse: a wrong key, the handshake faults, a
        model not in `models` (`unknown_model` says so), an encoding without sample rate."""
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            return http_error(401, "", {"dg-error": "Invalid credentials."})
        if self.fault == "rate_limit":
            return http_error(429, "", {"dg-error": "Too many requests", "Retry-After": "2"})
        if self.fault == "server_error":
            return http_error(503, "", {"dg-error": "Service unavailable"})
        if query.get("model", ["?"])[0] not in models:
            return http_error(400, "", {"dg-error": unknown_model})
        if "encoding" in query and "sample_rate" not in query:
            return http_error(400, "", {"dg-error": "sample_rate is required with encoding"})
        return None

    async def session(self, ws: ServerConnection, log: SessionLog) -> None:
        state = _Session(self, ws, log)
        await state.run()


class _Session:
    def __init__(self, fake: FakeDeepgram, ws: ServerConnection, log: SessionLog) -> None:
        self.fake, self.ws, self.log = fake, ws, log
        q = log.query
        self.rate = int(q.get("sample_rate", ["16000"])[0])
        self.interim = q.get("interim_results", ["false"])[0] == "true"
        self.punctuate = q.get("punctuate", ["false"])[0] == "true"
        self.diarize = q.get("diarize", ["false"])[0] == "true"
        self.utterance_end = "utterance_end_ms" in q
        self.vad_events = q.get("vad_events", ["false"])[0] == "true"
        self.recognizer = Recognizer(fake.text, fake.speech_seconds, self.rate)
        self.window: list[FakeWord] = []  # words not yet in an is_final piece
        self.segment_open = False
        self.results = 0
        self.garbage_sent = False
        self.pacer = Pacer(fake.speed)

    async def run(self) -> None:
        inbox = Inbox(self.ws.recv)
        try:
            await self.serve(inbox)
        finally:
            await inbox.aclose()

    async def serve(self, inbox: Inbox) -> None:
        while True:
            try:
                async with asyncio.timeout(self.fake.idle_timeout):
                    raw = await inbox.get()
            except TimeoutError:
                await self.ws.close(1011, "NET-0001 Deepgram did not receive audio data or a "
                                          "text message within the timeout window.")
                return
            if isinstance(raw, bytes):
                await self.pacer.hold(len(raw) / (2 * self.rate))
                if not await self.audio(raw):
                    return
                continue
            try:
                message = record_text(self.log, raw)
            except ValueError:
                await self.send({"type": "Error", "variant": "SchemaError",
                                 "description": "could not parse message", "message": raw})
                continue
            kind = message.get("type")
            if kind == "KeepAlive":
                continue
            if kind == "Finalize":
                await self.piece(speech_final=False, from_finalize=True)
            elif kind == "CloseStream":
                if self.fake.fault == "stall":  # never answer; wait for the client to go
                    await self.ws.wait_closed()
                    return
                await self.piece(speech_final=True)
                await self.send({"type": "Metadata", "transaction_key": "deprecated",
                                 "request_id": str(uuid.uuid4()), "sha256": "0" * 64,
                                 "created": "2026-01-01T00:00:00Z",
                                 "duration": round(self.recognizer.received, 3),
                                 "channels": 1})
                await self.ws.close(1000)
                return

    async def audio(self, pcm: bytes) -> bool:
        self.log.frames += 1
        self.log.audio_bytes += len(pcm)
        if self.fake.echo and pcm:
            await self.send({"type": "Results", "channel_index": [0, 1], "duration": 0.1,
                             "start": 0.0, "is_final": False, "speech_final": False,
                             "channel": {"alternatives": [{
                                 "transcript": f"b{self.log.audio_bytes}", "confidence": 1.0,
                                 "words": []}]}})
            return True
        if not pcm or self.fake.fault == "data_error":
            await self.ws.close(1008, "DATA-0000 The payload cannot be decoded as audio.")
            return False
        if self.fake.reference is not None and self.log.frames == 1:
            self.recognizer.resume_from(self.fake.reference, pcm)
        for word in self.recognizer.feed(pcm):
            if not self.segment_open and self.vad_events:
                await self.send({"type": "SpeechStarted", "channel": [0, 1],
                                 "timestamp": word.start})
            self.segment_open = True
            self.window.append(word)
            if word.ends_sentence:
                await self.piece(speech_final=True)
            elif len(self.window) >= PIECE_WORDS:
                await self.piece(speech_final=False)
            elif self.interim:
                await self.result(self.window, is_final=False)
        if self.fake.fault == "drop" and self.results:
            await self.ws.close(1011, "NET-0000 The service has not transmitted a Text frame.")
            return False
        if self.fake.fault == "malformed" and self.results:
            await self.ws.send("<html>502 Bad Gateway</html>")
        if self.fake.fault == "garbage_once" and self.results and not self.garbage_sent:
            self.garbage_sent = True
            await self.ws.send("<html>502 Bad Gateway</html>")
            await self.send({"type": "Results", "channel": {"alternatives": [{"words": [{}]}]}})
        return True

    async def piece(self, *, speech_final: bool, from_finalize: bool = False) -> None:
        words, self.window = self.window, []
        if words or from_finalize:
            await self.result(words, is_final=True, speech_final=speech_final,
                              from_finalize=from_finalize)
        if words and not speech_final and self.fake.fault == "drop_after_piece":
            await self.ws.close(1011, "NET-0000 The service has not transmitted a Text frame.")
            return
        if speech_final or from_finalize:
            self.segment_open = False
            if words and self.utterance_end:
                await self.send({"type": "UtteranceEnd", "channel": [0, 1],
                                 "last_word_end": words[-1].end})

    async def result(self, words: list[FakeWord], *, is_final: bool, speech_final: bool = False,
                     from_finalize: bool = False) -> None:
        self.results += 1
        start = words[0].start if words else self.recognizer.received
        end = words[-1].end if words else self.recognizer.received
        await self.send({
            "type": "Results", "channel_index": [0, 1], "duration": round(end - start, 3),
            "start": start, "is_final": is_final, "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{
                "transcript": join(words, self.punctuate), "confidence": 0.98,
                "words": [self.word(w) for w in words]}]},
            "metadata": {"request_id": str(uuid.uuid4()),
                         "model_info": {"name": "general-nova-3", "version": "2024-12-20",
                                        "arch": "nova-3"}},
        })

    def word(self, w: FakeWord) -> dict[str, Any]:
        out: dict[str, Any] = {"word": w.bare, "start": w.start, "end": w.end,
                               "confidence": 0.97}
        if self.punctuate:
            out["punctuated_word"] = w.text
        if self.diarize:
            out["speaker"] = 0
        return out

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))
