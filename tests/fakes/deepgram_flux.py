"""Deepgram's fake, with Flux (``/v2/listen``) beside the v1 API it already serves.

Flux judged like the real service (deepgram-sdk ``listen/v2``; developers.deepgram.com/docs/
flux): ``Authorization: Token``; a Flux ``model``; ``sample_rate`` with ``encoding``;
``eager_eot_threshold`` within 0.3-0.9 and at most ``eot_threshold``; v1-only parameters
(``interim_results``, ``endpointing``, ...) refused with 400. Answers ``Connected``, then one
``TurnInfo`` per change and an ``Update`` every 240 ms of audio (an empty transcript between
turns): ``StartOfTurn`` on a turn's first word, ``Update`` per word,
``EagerEndOfTurn`` after a turn's first word and at its end (when ``eager_eot_threshold`` is
set), ``TurnResumed`` when speech goes on after an eager end, ``EndOfTurn`` at sentence ends
(``trigger: model``) and on ``ForceEndTurn`` (``trigger: manual``). ``CloseStream`` does NOT end
the open turn: the last message is an ``Update`` and the server closes without a close code.
Records the size of every audio frame (`frame_sizes`) so tests can check the 80 ms chunking.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from tests.fakes._server import SessionLog, http_error, record_text
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.recognizer import FakeWord, Recognizer

FLUX_MODELS = {"flux-general-en", "flux-general-multi"}
UPDATE_EVERY = 0.24  # Flux reports on the audio every 240 ms, speech or not
V1_ONLY = {"interim_results", "endpointing", "utterance_end_ms", "vad_events", "punctuate",
           "smart_format", "diarize", "keywords", "channels"}


class FakeDeepgramFlux(FakeDeepgram):
    """Flux faults (besides v1's ``rate_limit`` / ``server_error`` at the handshake):
    ``"error"`` (an ``Error`` message, then a close without a code, after the first TurnInfo),
    ``"close_no_code"`` (closes without a code and without a word, after the first TurnInfo),
    ``"drop"`` (the connection is cut), ``"malformed"`` (a burst of non-JSON text frames),
    ``"stall"`` (``ForceEndTurn`` and ``CloseStream`` are never answered)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.frame_sizes: list[int] = []

    def judge(self, request: Request) -> Response | None:
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(request.path)
        if parts.path != "/v2/listen":
            return super().judge(request)
        query = parse_qs(parts.query)
        refused = self.refuse(request, query, FLUX_MODELS, "Flux needs a flux-* model")
        if refused is not None:
            return refused
        unknown = V1_ONLY & set(query)
        if unknown:
            return http_error(400, "", {"dg-error": f"unknown parameter {sorted(unknown)[0]}"})
        eot = float(query.get("eot_threshold", ["0.7"])[0])
        eager = query.get("eager_eot_threshold")
        if eager and not (0.3 <= float(eager[0]) <= min(0.9, eot)):
            return http_error(400, "", {"dg-error": "eager_eot_threshold out of range"})
        return None

    async def session(self, ws: ServerConnection, log: SessionLog) -> None:
        if log.path != "/v2/listen":
            await super().session(ws, log)
            return
        await _FluxSession(self, ws, log).run()


class _FluxSession:
    def __init__(self, fake: FakeDeepgramFlux, ws: ServerConnection, log: SessionLog) -> None:
        self.fake, self.ws, self.log = fake, ws, log
        self.rate = int(log.query.get("sample_rate", ["16000"])[0])
        self.eager = "eager_eot_threshold" in log.query
        self.multi = log.query["model"][0].endswith("-multi")
        self.recognizer = Recognizer(fake.text, fake.speech_seconds, self.rate)
        self.turn: list[FakeWord] = []
        self.turn_index = 0
        self.eager_sent = False
        self.sequence = 0
        self.request_id = str(uuid.uuid4())
        self.turn_infos = 0
        self.next_update = UPDATE_EVERY

    async def run(self) -> None:
        await self.send({"type": "Connected", "request_id": self.request_id})
        while True:
            try:
                async with asyncio.timeout(self.fake.idle_timeout):
                    raw = await self.ws.recv()
            except TimeoutError:
                await self.ws.close(1011, "NET-0001 Deepgram did not receive audio data within "
                                          "the timeout window.")
                return
            if isinstance(raw, bytes):
                if not await self.audio(raw):
                    return
                continue
            message = record_text(self.log, raw)
            kind = message.get("type")
            if self.fake.fault == "stall" and kind in ("ForceEndTurn", "CloseStream"):
                await self.ws.wait_closed()
                return
            if kind == "ForceEndTurn":
                if self.turn:
                    await self.end_turn("manual")
            elif kind == "CloseStream":
                # The open turn is NOT finalized: a last Update over all the audio, then close.
                await self.turn_info("Update", 0.2)
                await self.close_without_code()
                return
            else:
                await self.send({"type": "Error", "code": "UNPARSABLE_CLIENT_MESSAGE",
                                 "description": f"unknown message type {kind!r}"})
                await self.close_without_code()
                return

    async def audio(self, pcm: bytes) -> bool:
        self.fake.frame_sizes.append(len(pcm))
        self.log.frames += 1
        self.log.audio_bytes += len(pcm)
        if not pcm:
            await self.ws.close(1008, "DATA-0000 The payload cannot be decoded as audio.")
            return False
        for word in self.recognizer.feed(pcm):
            self.turn.append(word)
            if len(self.turn) == 1:
                await self.turn_info("StartOfTurn", 0.05)
            elif self.eager_sent:
                self.eager_sent = False
                await self.turn_info("TurnResumed", 0.3)
            else:
                await self.turn_info("Update", 0.2)
            if word.ends_sentence:
                if self.eager:
                    await self.turn_info("EagerEndOfTurn", 0.62)
                await self.end_turn("model")
            elif len(self.turn) == 1 and self.eager:
                self.eager_sent = True
                await self.turn_info("EagerEndOfTurn", 0.55)
            if await self.fault_hit():
                return False
        while self.recognizer.received >= self.next_update:
            self.next_update += UPDATE_EVERY
            await self.turn_info("Update", 0.1)
            if await self.fault_hit():
                return False
        return True

    async def fault_hit(self) -> bool:
        fault = self.fake.fault
        if fault == "error":
            await self.send({"type": "Error", "code": "INTERNAL_SERVER_ERROR",
                             "description": "The server encountered an internal error."})
            await self.close_without_code()
            return True
        if fault == "close_no_code":
            await self.close_without_code()
            return True
        if fault == "drop":
            self.ws.transport.abort()
            return True
        if fault == "malformed":
            for _ in range(6):  # a burst: one bad message alone is skipped
                await self.ws.send("<html>502 Bad Gateway</html>")
        return False

    async def end_turn(self, trigger: str) -> None:
        await self.turn_info("EndOfTurn", 0.91, trigger=trigger)
        self.turn = []
        self.eager_sent = False
        self.turn_index += 1

    async def turn_info(self, event: str, confidence: float, trigger: str | None = None) -> None:
        words = self.turn
        start = words[0].start if words else self.recognizer.received
        message: dict[str, Any] = {
            "type": "TurnInfo", "request_id": self.request_id, "event": event,
            "turn_index": self.turn_index, "audio_window_start": start,
            "audio_window_end": round(self.recognizer.received, 3),
            "transcript": " ".join(w.text for w in words),
            "words": [{"word": w.text, "confidence": 0.96, "start": w.start, "end": w.end}
                      for w in words],
            "end_of_turn_confidence": confidence}
        if trigger:
            message["trigger"] = trigger
        if self.multi:
            message["languages"] = ["en"]
        self.turn_infos += 1
        await self.send(message)

    async def close_without_code(self) -> None:
        await self.ws.close(None)  # type: ignore[arg-type]  # an empty close frame: no code

    async def send(self, message: dict[str, Any]) -> None:
        message["sequence_id"] = self.sequence
        self.sequence += 1
        await self.ws.send(json.dumps(message))
