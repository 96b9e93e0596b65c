"""``POST /v1/transcribe`` — transcribe a whole file through the same session core."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from adapters import base as ab
from app.audio import decode_audio
from app.credentials import key_from_request
from app.errors import GatewayError, to_gateway_error
from app.frontends.wire import word_json
from app.gateway import Gateway
from app.params import SessionRequest, parse_session_params
from app.session import SessionCreated, SessionError, open_session

MAX_BODY_BYTES = 200 * 1024 * 1024
FEED_BYTES = 32_000  # 1 s of 16 kHz PCM per send


def error_response(error: GatewayError) -> JSONResponse:
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return JSONResponse({"error": {"code": error.code, "message": error.message}},
                        status_code=error.http_status, headers=headers)


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise GatewayError(4413, f"body over {MAX_BODY_BYTES // (1024 * 1024)} MiB",
                               code="payload_too_large")
    if not body:
        raise GatewayError(4400, "empty body: send an audio file or raw PCM",
                           code="invalid_request")
    return bytes(body)


def _pcm_rate(content_type: str) -> int | None:
    """``audio/pcm;rate=16000`` (also audio/l16, audio/raw) -> 16000."""
    kind = content_type.split(";")[0].strip().lower()
    if kind not in ("audio/pcm", "audio/l16", "audio/raw", "audio/x-raw"):
        return None
    match = re.search(r"rate=(\d+)", content_type)
    rate = int(match.group(1)) if match else 16000
    if not 8000 <= rate <= 48000:
        raise GatewayError(4400, f"invalid parameter rate: {rate} is outside 8000-48000")
    return rate


async def transcribe_file(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        params = {k: request.query_params.getlist(k) for k in request.query_params.keys()}
        session_request = parse_session_params(
            params, default_model=gateway.settings.default_model, batch=True)
        client = request.client.host if request.client else None
        principal = await gateway.authenticate(
            key_from_request(request.headers, request.query_params), client)
        body = await _read_body(request)
        pcm, rate = await decode_upload(body, request.headers.get("content-type", ""))
        result = await run_batch(gateway, session_request, principal, pcm, rate,
                                 request.headers.get("origin"))
        return render_batch(session_request.output_format, result.finals, result.language,
                            result.duration, result.session_id)
    except Exception as exc:
        return error_response(to_gateway_error(exc))


async def decode_upload(body: bytes, content_type: str) -> tuple[bytes, int]:
    """An uploaded file (any container) or raw PCM (by its content type) -> (PCM, rate)."""
    rate = _pcm_rate(content_type)
    if rate is not None:
        return body, rate
    try:
        chunks = await asyncio.to_thread(
            lambda: [c.pcm for c in decode_audio(body, 16000, chunk_seconds=1.0)])
    except ValueError as exc:
        raise GatewayError(4400, f"invalid audio: {exc}") from None
    return b"".join(chunks), 16000


@dataclasses.dataclass(frozen=True, slots=True)
class BatchResult:
    finals: list[ab.Transcript]
    language: str
    duration: float
    session_id: str


async def run_batch(gateway: Gateway, req: SessionRequest, principal: Any, pcm: bytes,
                    rate: int, origin: str | None) -> BatchResult:
    """Transcribe a whole recording through the session core; the finals, in order."""
    streaming = dataclasses.replace(
        req, options=dataclasses.replace(req.options, sample_rate=rate, interim_results=False))
    finals: list[ab.Transcript] = []
    language = req.options.language
    async with open_session(gateway, streaming, principal, origin=origin) as session:
        async def feed() -> None:
            for i in range(0, len(pcm), FEED_BYTES):
                await session.send_audio(pcm[i:i + FEED_BYTES])
            await session.close_stream()

        feeder = asyncio.create_task(feed())
        try:
            async for event in session.events():
                if isinstance(event, ab.Transcript) and event.is_final:
                    finals.append(event)
                elif isinstance(event, SessionError):
                    raise event.error
                elif isinstance(event, SessionCreated):
                    language = event.language
        finally:
            feeder.cancel()
    return BatchResult(finals, language, len(pcm) / (2 * rate), session.id)


def render_batch(fmt: str, finals: list[ab.Transcript], language: str, duration: float,
                 request_id: str) -> Response:
    text = " ".join(t.text.strip() for t in finals if t.text.strip())
    if fmt == "text":
        return PlainTextResponse(text)
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(subtitles(finals, fmt),
                                 media_type="text/vtt" if fmt == "vtt" else "application/x-subrip")
    segments = []
    for index, t in enumerate(finals):
        seg: dict[str, Any] = {"id": index, "start": t.start, "end": t.end, "text": t.text}
        if t.speaker is not None:
            seg["speaker"] = t.speaker
        if t.confidence is not None:
            seg["confidence"] = t.confidence
        segments.append(seg)
    return JSONResponse({
        "id": request_id, "text": text, "language": language, "duration": round(duration, 3),
        "segments": segments, "words": [word_json(w) for t in finals for w in t.words]})


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def subtitles(finals: list[ab.Transcript], fmt: str) -> str:
    sep = "." if fmt == "vtt" else ","
    blocks = []
    for index, t in enumerate((t for t in finals if t.text.strip()), 1):
        cue = f"{_stamp(t.start, sep)} --> {_stamp(t.end, sep)}\n{t.text.strip()}\n"
        blocks.append(cue if fmt == "vtt" else f"{index}\n{cue}")
    body = "\n".join(blocks)
    return f"WEBVTT\n\n{body}" if fmt == "vtt" else body
