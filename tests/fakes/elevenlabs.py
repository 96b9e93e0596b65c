"""A fake of ElevenLabs' realtime speech-to-text API (``/v1/speech-to-text/realtime``).

Judges like the real service (message shapes from the ``elevenlabs`` SDK, ``realtime/`` and
``types/``): the key in the ``xi-api-key`` header (or a ``token`` query parameter), else an
``auth_error`` message and close; a known ``model_id`` and ``audio_format`` (``pcm_<rate>`` /
``ulaw_8000``), else ``invalid_request``; JSON ``input_audio_chunk`` messages only, whose
``sample_rate`` matches the format and whose ``previous_text`` comes with the first chunk only
(``input_error``); chunks over one second (``chunk_size_exceeded``, a bound the fake assumes);
no audio for `idle_timeout` seconds (``insufficient_audio_activity``). Every error is a message,
then the close. Answers with ``session_started``, ``partial_transcript`` per word heard,
``committed_transcript`` + ``committed_transcript_with_timestamps`` (words, spacing and
punctuation items, seconds) at sentence ends with ``commit_strategy=vad`` and on each manual
commit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from typing import Any

from websockets.asyncio.server import ServerConnection

from tests.fakes._server import BECKETT_SECONDS, SessionLog, WsFake, record_text
from tests.fakes.recognizer import FakeWord, Recognizer
from tests.speech import BECKETT_TEXT

MODELS = {"scribe_v2_realtime"}
FORMATS = {"pcm_8000": 8000, "pcm_16000": 16000, "pcm_22050": 22050, "pcm_24000": 24000,
           "pcm_44100": 44100, "pcm_48000": 48000, "ulaw_8000": 8000}
MAX_CHUNK_SECONDS = 1.0
PUNCTUATION = ".,;:!?"


class FakeElevenLabs(WsFake):
    """Faults: ``"quota"`` (``quota_exceeded``), ``"rate_limit"`` (``rate_limited``),
    ``"server_error"`` (``transcriber_error``) after the first partial; ``"drop"`` (the
    connection is cut after the first partial), ``"malformed"`` (a burst of non-JSON text frames),
    ``"stall"`` (from the first manual commit on, the fake answers nothing)."""

    def __init__(self, *, api_key: str = "xi-test-key", text: str = BECKETT_TEXT,
                 speech_seconds: float = BECKETT_SECONDS, idle_timeout: float = 15.0,
                 fault: str | None = None, answer_empty_commits: bool = True) -> None:
        super().__init__()
        # Whether a manual commit with nothing new gets an (empty) committed transcript;
        # undocumented, so the adapter must cope with either.
        self.answer_empty_commits = answer_empty_commits
        self.api_key = api_key
        self.text = text
        self.speech_seconds = speech_seconds
        self.idle_timeout = idle_timeout
        self.fault = fault

    @property
    def http_url(self) -> str:
        """The REST base the adapter is given (it derives ws:// from it)."""
        return f"http://127.0.0.1:{self.port}"

    async def session(self, ws: ServerConnection, log: SessionLog) -> None:
        await _Session(self, ws, log).run()


class _Session:
    def __init__(self, fake: FakeElevenLabs, ws: ServerConnection, log: SessionLog) -> None:
        self.fake, self.ws, self.log = fake, ws, log
        q = log.query
        self.query = {k: v[0] for k, v in q.items()}
        self.keyterms = q.get("keyterms", [])
        self.rate = FORMATS.get(self.query.get("audio_format", ""), 0)
        self.recognizer = Recognizer(fake.text, fake.speech_seconds, self.rate or 16000)
        self.open: list[FakeWord] = []
        self.chunks = 0
        self.partials = 0
        self.stalled = False

    async def run(self) -> None:
        if not await self.judge():
            return
        await self.send({"message_type": "session_started", "session_id": uuid.uuid4().hex,
                         "config": {
                             "sample_rate": self.rate,
                             "audio_format": self.query["audio_format"],
                             "language_code": self.query.get("language_code"),
                             "commit_strategy": self.query.get("commit_strategy", "manual"),
                             "model_id": self.query["model_id"],
                             "include_timestamps": self.timestamps,
                             "keyterms": self.keyterms}})
        while True:
            try:
                async with asyncio.timeout(self.fake.idle_timeout):
                    raw = await self.ws.recv()
            except TimeoutError:
                await self.error("insufficient_audio_activity", "No audio received.")
                return
            if isinstance(raw, bytes):
                await self.error("input_error", "Binary frames are not accepted; send "
                                                "input_audio_chunk messages.")
                return
            try:
                message = record_text(self.log, raw)
            except ValueError:
                await self.error("input_error", "Invalid JSON.")
                return
            if not await self.chunk(message):
                return

    async def judge(self) -> bool:
        headers = self.log.headers
        if headers.get("xi-api-key") != self.fake.api_key and "token" not in self.query:
            await self.error("auth_error", "Invalid API key." if "xi-api-key" in headers
                             else "Missing xi-api-key header or token.")
            return False
        if self.query.get("model_id") not in MODELS:
            await self.error("invalid_request", f"Invalid model_id {self.query.get('model_id')!r}")
            return False
        if not self.rate:
            await self.error("invalid_request", "Invalid audio_format "
                                                f"{self.query.get('audio_format')!r}")
            return False
        if any(len(t) > 20 for t in self.keyterms) or len(self.keyterms) > 50:
            await self.error("invalid_request", "keyterms: at most 50 of at most 20 characters")
            return False
        return True

    @property
    def timestamps(self) -> bool:
        return self.query.get("include_timestamps") == "true"

    async def chunk(self, message: dict[str, Any]) -> bool:
        if message.get("message_type") != "input_audio_chunk":
            await self.error("invalid_request", f"Unknown message_type "
                                                f"{message.get('message_type')!r}")
            return False
        if message.get("sample_rate") != self.rate:
            await self.error("input_error", "sample_rate does not match audio_format.")
            return False
        if message.get("previous_text") is not None and self.chunks:
            await self.error("input_error", "previous_text can only be sent with the first "
                                            "audio chunk.")
            return False
        self.chunks += 1
        try:
            pcm = base64.b64decode(str(message.get("audio_base_64") or ""), validate=True)
        except (binascii.Error, ValueError):
            await self.error("input_error", "audio_base_64 is not valid base64.")
            return False
        if len(pcm) > MAX_CHUNK_SECONDS * self.rate * 2:
            await self.error("chunk_size_exceeded", "Audio chunk too large.")
            return False
        self.log.frames += 1
        self.log.audio_bytes += len(pcm)
        vad = self.query.get("commit_strategy") == "vad"
        for word in self.recognizer.feed(pcm):
            self.open.append(word)
            await self.send({"message_type": "partial_transcript",
                             "text": " ".join(w.text for w in self.open)})
            self.partials += 1
            if word.ends_sentence and vad:
                await self.commit()
        if self.partials and self.fake.fault in ("quota", "rate_limit", "server_error"):
            kind = {"quota": "quota_exceeded", "rate_limit": "rate_limited",
                    "server_error": "transcriber_error"}[self.fake.fault]
            await self.error(kind, {"quota_exceeded": "You have exceeded your quota of "
                                                      "realtime transcription hours.",
                                    "rate_limited": "Too many concurrent sessions.",
                                    "transcriber_error": "Internal transcriber error."}[kind])
            return False
        if self.partials and self.fake.fault == "drop":
            self.ws.transport.abort()
            return False
        if self.partials and self.fake.fault == "malformed":
            for _ in range(6):  # a burst: one bad message alone is skipped
                await self.ws.send("<html>502 Bad Gateway</html>")
        if message.get("commit"):
            self.stalled = self.fake.fault == "stall"
            await self.commit()
        return True

    async def commit(self) -> None:
        words, self.open = self.open, []
        if not words and not self.fake.answer_empty_commits:
            return
        text = " ".join(w.text for w in words)
        await self.send({"message_type": "committed_transcript", "text": text})
        if self.timestamps:
            await self.send({"message_type": "committed_transcript_with_timestamps",
                             "text": text, "language_code": "en",
                             "words": self.items(words)})

    def items(self, words: list[FakeWord]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, w in enumerate(words):
            if i:
                out.append({"text": " ", "start": w.start, "end": w.start, "type": "spacing"})
            bare = w.text.rstrip(PUNCTUATION)
            out.append({"text": bare, "start": w.start, "end": w.end, "type": "word",
                        "logprob": -0.05})
            if bare != w.text:
                out.append({"text": w.text[len(bare):], "start": w.end, "end": w.end,
                            "type": "punctuation"})
        return out

    async def error(self, kind: str, text: str) -> None:
        await self.send({"message_type": kind, "error": text})
        await self.ws.close(1000 if kind != "auth_error" else 1008, kind)

    async def send(self, message: dict[str, Any]) -> None:
        if self.stalled:
            return
        await self.ws.send(json.dumps(message))
