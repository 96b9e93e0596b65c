"""A fake of the OpenAI-compatible ``POST /audio/transcriptions`` API (Groq, OpenAI whisper-1).

Judges like the real services: ``Authorization: Bearer <key>`` (401 ``invalid_api_key``), a
known ``model`` (404 ``model_not_found``), ``timestamp_granularities[]`` only with
``verbose_json`` (400), a decodable audio file (400). The "recognizer" finds the uploaded
audio inside the reference recording it was given (bit-exact, as our WAVs carry the client's
samples) and answers with the words spoken there: words are spread over the reference's
speech frames, so an utterance gets the words said inside it.
https://console.groq.com/docs/speech-to-text,
https://platform.openai.com/docs/api-reference/audio/createTranscription
"""

from __future__ import annotations

import asyncio
import io
import uuid
import wave
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.speech import BECKETT_TEXT
from tests.speech import pcm as speech_pcm

RATE = 16000
FRAME = RATE // 100  # 10 ms energy frames
LOUD = 600  # RMS of a speech frame (s16)


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, list[str]], dict[str, bytes]]:
    """Form fields and files of a multipart/form-data body (no python-multipart needed)."""
    message = BytesParser(policy=email_policy).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, list[str]] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[str(name)] = payload
        else:
            fields.setdefault(str(name), []).append(payload.decode())
    return fields, files


class Reference:
    """The recording the client streams, with each word placed on its speech.

    Speech regions are runs of loud 10 ms frames (gaps under 300 ms bridged, blips under
    150 ms dropped). When the text has one sentence per region, each sentence's words are
    spread over its region; otherwise all words are spread over the speech frames.
    """

    def __init__(self, pcm: bytes, text: str) -> None:
        self.pcm = pcm
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME)
        loud = np.flatnonzero(np.sqrt((frames ** 2).mean(axis=1)) > LOUD)
        regions: list[list[int]] = []
        for frame in loud.tolist():
            if regions and frame - regions[-1][-1] <= 30:
                regions[-1].append(frame)
            else:
                regions.append([frame])
        regions = [r for r in regions if r[-1] - r[0] >= 15]
        sentences = _sentences(text)
        if len(sentences) != len(regions):
            sentences, regions = [text.split()], [loud.tolist()]
        # (word, start, end, anchor): anchor is a speech frame in the middle of the word.
        self.words: list[tuple[str, float, float, float]] = []
        for tokens, region in zip(sentences, regions, strict=True):
            per = len(region) / len(tokens)
            for i, tok in enumerate(tokens):
                first = region[int(i * per)]
                last = region[min(len(region) - 1, int((i + 1) * per) - 1)]
                self.words.append((tok, first * FRAME / RATE, (last + 1) * FRAME / RATE,
                                   region[int((i + 0.5) * per)] * FRAME / RATE))

    def locate(self, pcm: bytes) -> float | None:
        """Offset (s) of `pcm` inside the reference, if it is a piece of it."""
        probe = pcm[:64]
        at = self.pcm.find(probe)
        while at != -1:
            if at % 2 == 0 and self.pcm[at:at + len(pcm)] == pcm:
                return at / 2 / RATE
            at = self.pcm.find(probe, at + 1)
        return None

    def words_in(self, start: float, end: float) -> list[tuple[str, float, float]]:
        return [(w, max(s, start), min(e, end)) for w, s, e, anchor in self.words
                if start <= anchor < end]


@dataclass
class RequestLog:
    headers: dict[str, str]
    fields: dict[str, list[str]]
    seconds: float = 0.0
    status: int = 200


@dataclass
class TranscriptionsFake:
    """Routes for ``{prefix}/models`` and ``{prefix}/audio/transcriptions``.

    Faults: ``"rate_limit"`` (429), ``"server_error"`` (500), ``"malformed"`` (200, not
    JSON), ``"stall"`` (never answers), ``"drop"`` (the connection drops mid-answer).
    """

    api_key: str
    models: set[str]
    prefix: str = "/v1"
    reference: Reference = field(default_factory=lambda: Reference(speech_pcm("beckett.wav"),
                                                                   BECKETT_TEXT))
    fault: str | None = None
    requests: list[RequestLog] = field(default_factory=list)
    # Set when the fake stops: a stalled request then ends.
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def routes(self) -> list[Route]:
        return [Route(f"{self.prefix}/models", self.list_models, methods=["GET"]),
                Route(f"{self.prefix}/audio/transcriptions", self.transcribe, methods=["POST"])]

    def _auth(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Invalid API Key", "invalid_api_key")
        return None

    async def list_models(self, request: Request) -> Response:
        denied = self._auth(request)
        return denied or JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "owned_by": "fake"} for m in sorted(self.models)]})

    async def transcribe(self, request: Request) -> Response:
        fields, files = parse_multipart(request.headers.get("content-type", ""),
                                        await request.body())
        log = RequestLog(dict(request.headers), fields)
        self.requests.append(log)
        response = await self._answer(request, fields, files, log)
        log.status = response.status_code
        return response

    async def _answer(self, request: Request, fields: dict[str, list[str]],
                      files: dict[str, bytes], log: RequestLog) -> Response:
        denied = self._auth(request)
        if denied:
            return denied
        if self.fault == "rate_limit":
            return _error(429, "Rate limit reached for model", "rate_limit_exceeded",
                          {"retry-after": "3"})
        if self.fault == "server_error":
            return _error(500, "Internal server error", "internal_error")
        if self.fault == "stall":
            await self.released.wait()
            return _error(504, "gateway timeout", "timeout")
        if self.fault == "malformed":
            return PlainTextResponse("<html>bad gateway</html>")
        if self.fault == "drop":
            return _Dropped()
        model = fields.get("model", [""])[0]
        if model not in self.models:
            return _error(404, f"The model `{model}` does not exist", "model_not_found")
        fmt = fields.get("response_format", ["json"])[0]
        if fields.get("timestamp_granularities[]") and fmt != "verbose_json":
            return _error(400, "timestamp_granularities requires verbose_json",
                          "invalid_request_error")
        try:
            with wave.open(io.BytesIO(files["file"]), "rb") as w:
                rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
                pcm = w.readframes(w.getnframes())
        except (KeyError, wave.Error, EOFError):
            return _error(400, "could not process file - is it a valid media file?",
                          "invalid_request_error")
        log.seconds = len(pcm) / (rate * width * channels)
        offset = self.reference.locate(pcm) if (rate, width, channels) == (RATE, 2, 1) else None
        words = [] if offset is None else [
            (w, round(s - offset, 3), round(e - offset, 3))
            for w, s, e in self.reference.words_in(offset, offset + log.seconds)]
        text = " ".join(w for w, _, _ in words)
        if fmt != "verbose_json":
            return JSONResponse({"text": text})
        return JSONResponse({
            "task": "transcribe", "language": "english", "duration": round(log.seconds, 3),
            "text": " " + text if text else "",
            "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": round(log.seconds, 3),
                          "text": text, "tokens": [], "temperature": 0.0,
                          "avg_logprob": -0.15, "compression_ratio": 1.2,
                          "no_speech_prob": 0.01}] if text else [],
            "words": [{"word": w, "start": s, "end": e} for w, s, e in words],
            "x_groq": {"id": f"req_{uuid.uuid4().hex}"},
        })


class _Dropped(Response):
    """Starts a 200 answer, then the connection goes away before the body is complete."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": b'{"text": "', "more_body": True})
        raise ConnectionAbortedError("the fake dropped the connection")


def _sentences(text: str) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for token in text.split():
        out[-1].append(token)
        if token.endswith((".", "!", "?")):
            out.append([])
    return [s for s in out if s]


def _error(status: int, message: str, code: str,
           headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"error": {"message": message, "type": "invalid_request_error",
                                      "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)
