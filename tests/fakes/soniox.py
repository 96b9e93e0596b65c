"""A fake of Soniox's real-time WebSocket API (``wss://stt-rt.soniox.com/transcribe-websocket``).

Judges like the real service: the key as ``Authorization: Bearer`` on the handshake (401
otherwise; a key inside the config message is refused, as Soniox will from 2027-01-15); the
first frame must be the JSON config with a known ``model`` and ``audio_format``, and
``pcm_s16le`` needs ``sample_rate`` and ``num_channels`` (error 400 otherwise); audio before the
config is an error; 20 s without audio or a keepalive ends the stream (error 408).
Answers like Soniox: sub-word tokens with ``start_ms``/``end_ms``, non-final tokens re-sent in
every response until they turn final, final tokens sent once, ``<end>`` at sentence ends (with
endpoint detection), ``<fin>`` after a ``finalize``, and at end of audio (an empty frame) the
remaining finals and ``finished: true`` before closing.
https://soniox.com/docs/stt/api-reference/websocket-api
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from tests.fakes._server import BECKETT_SECONDS, SessionLog, WsFake, http_error, record_text
from tests.fakes.recognizer import FakeWord, Recognizer
from tests.speech import BECKETT_TEXT

MODELS = {"stt-rt-v4", "stt-rt-v5"}
NON_FINAL_WORDS = 2  # words stay provisional until this many more were heard


class FakeSoniox(WsFake):
    """Faults: ``"rate_limit"`` / ``"server_error"`` (an error message, 429 / 503, then close
    after the first response), ``"drop"`` (the connection is cut after the first response),
    ``"malformed"`` (a burst of non-JSON text frames), ``"stall"`` (never answer the end of
    audio)."""

    def __init__(self, *, api_key: str = "soniox-test-key", text: str = BECKETT_TEXT,
                 speech_seconds: float = BECKETT_SECONDS, idle_timeout: float = 20.0,
                 fault: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.text = text
        self.speech_seconds = speech_seconds
        self.idle_timeout = idle_timeout
        self.fault = fault

    def judge(self, request: Request) -> Response | None:
        from urllib.parse import urlsplit

        if urlsplit(request.path).path != "/transcribe-websocket":
            return http_error(404, "Not Found")
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return http_error(401, "Invalid API key.")
        return None

    async def session(self, ws: ServerConnection, log: SessionLog) -> None:
        await _Session(self, ws, log).run()


class _Session:
    def __init__(self, fake: FakeSoniox, ws: ServerConnection, log: SessionLog) -> None:
        self.fake, self.ws, self.log = fake, ws, log
        self.config: dict[str, Any] = {}
        self.recognizer = Recognizer(fake.text, fake.speech_seconds)
        self.pending: list[FakeWord] = []  # heard, not yet final
        self.responses = 0

    async def run(self) -> None:
        if not await self.configure():
            return
        while True:
            try:
                async with asyncio.timeout(self.fake.idle_timeout):
                    raw = await self.ws.recv()
            except TimeoutError:
                await self.error(408, "Request timeout: no audio received.")
                return
            if isinstance(raw, bytes):
                if not raw:  # end of audio
                    await self.end_of_audio()
                    return
                if not await self.audio(raw):
                    return
                continue
            try:
                message = record_text(self.log, raw)
            except ValueError:
                await self.error(400, "Invalid control message.")
                return
            kind = message.get("type")
            if kind == "keepalive":
                continue
            if kind == "finalize":
                await self.respond(self.finalize_pending(), marker="<fin>")
            else:
                await self.error(400, f"Unknown control message type: {kind!r}.")
                return

    async def configure(self) -> bool:
        raw = await self.ws.recv()
        if isinstance(raw, bytes):
            await self.error(400, "The first message must be the JSON configuration.")
            return False
        try:
            config = record_text(self.log, raw)
        except ValueError:
            await self.error(400, "Invalid configuration message.")
            return False
        if "api_key" in config:
            await self.error(400, "api_key in the configuration message is no longer "
                                  "accepted; authenticate on the WebSocket handshake.")
            return False
        if config.get("model") not in MODELS:
            await self.error(400, f"Invalid model: {config.get('model')!r}.")
            return False
        fmt = config.get("audio_format")
        if fmt == "pcm_s16le":
            if config.get("sample_rate") != 16000 or config.get("num_channels") != 1:
                # The fake's recognizer hears 16 kHz mono; Soniox takes other rates too, but
                # without these two fields raw PCM cannot be decoded at all.
                if not config.get("sample_rate") or not config.get("num_channels"):
                    await self.error(400, "sample_rate and num_channels are required for "
                                          "audio_format pcm_s16le.")
                    return False
                self.recognizer = Recognizer(self.fake.text, self.fake.speech_seconds,
                                             int(config["sample_rate"]))
        elif fmt != "auto":
            await self.error(400, f"Invalid audio_format: {fmt!r}.")
            return False
        self.config = config
        return True

    async def audio(self, pcm: bytes) -> bool:
        self.log.frames += 1
        self.log.audio_bytes += len(pcm)
        heard = self.recognizer.feed(pcm)
        if not heard:
            return True
        finals: list[dict[str, Any]] = []
        for word in heard:
            self.pending.append(word)
            if word.ends_sentence and self.config.get("enable_endpoint_detection"):
                finals += self.finalize_pending()
                finals.append(self.marker("<end>"))
        while len(self.pending) > NON_FINAL_WORDS:
            finals += self.tokens(self.pending.pop(0), final=True)
        await self.respond(finals)
        if self.fake.fault in ("rate_limit", "server_error"):
            code = 429 if self.fake.fault == "rate_limit" else 503
            await self.error(code, "Too many requests." if code == 429 else "Service "
                                                                           "unavailable.")
            return False
        if self.fake.fault == "drop":
            self.ws.transport.abort()
            return False
        if self.fake.fault == "malformed":
            for _ in range(6):  # a burst: one bad message alone is skipped
                await self.ws.send("<html>502 Bad Gateway</html>")
        return True

    def finalize_pending(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for word in self.pending:
            out += self.tokens(word, final=True)
        self.pending = []
        return out

    async def end_of_audio(self) -> None:
        if self.fake.fault == "stall":  # never answer; wait for the client to go
            await self.ws.wait_closed()
            return
        await self.respond(self.finalize_pending())
        await self.send({"tokens": [], "final_audio_proc_ms": self.ms(),
                         "total_audio_proc_ms": self.ms(), "finished": True})
        await self.ws.close(1000)

    async def respond(self, finals: list[dict[str, Any]], marker: str | None = None) -> None:
        """One response: the new final tokens, then every non-final token again."""
        if marker:
            finals = [*finals, self.marker(marker)]
        non_final = [t for w in self.pending for t in self.tokens(w, final=False)]
        self.responses += 1
        await self.send({"tokens": finals + non_final, "final_audio_proc_ms": self.ms(),
                         "total_audio_proc_ms": self.ms()})

    def tokens(self, word: FakeWord, *, final: bool) -> list[dict[str, Any]]:
        """A word as Soniox's sub-word tokens: a leading space starts a word; long words are
        split in two."""
        text = word.text if self.first_word_of(word) else " " + word.text
        cut = len(text) // 2 if len(word.text) > 6 else len(text)
        parts = [p for p in (text[:cut], text[cut:]) if p]
        middle = round((word.start + word.end) / 2 * 1000)
        bounds = [round(word.start * 1000), middle, round(word.end * 1000)]
        out = []
        for i, part in enumerate(parts):
            token: dict[str, Any] = {
                "text": part, "start_ms": bounds[i] if len(parts) == 2 else bounds[0],
                "end_ms": bounds[i + 1] if len(parts) == 2 else bounds[2],
                "confidence": 0.97, "is_final": final}
            if self.config.get("enable_speaker_diarization"):
                token["speaker"] = "1"
            if self.config.get("enable_language_identification"):
                token["language"] = "en"
            out.append(token)
        return out

    def first_word_of(self, word: FakeWord) -> bool:
        return bool(self.recognizer.words) and self.recognizer.words[0] is word

    def marker(self, text: str) -> dict[str, Any]:
        return {"text": text, "start_ms": self.ms(), "end_ms": self.ms(), "confidence": 1.0,
                "is_final": True}

    def ms(self) -> int:
        return round(self.recognizer.received * 1000)

    async def error(self, code: int, message: str) -> None:
        # Soniox answers with an error response, then closes the connection.
        await self.send({"tokens": [], "error_code": code, "error_message": message})
        await self.ws.close(1000)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))
