"""``POST /v1/transcribe`` — transcribe a whole file through the same session core.

Admission before work: the key is authenticated and the session admitted (rights, quota,
concurrency) before a byte of the body is read. Bounded work: raw PCM goes to the session as
it arrives; a file is spooled (memory up to `SPOOL_MEMORY_BYTES`, then disk) and decoded
chunk by chunk into the session, stopping at the key's remaining audio quota (402) and at
``max_batch_seconds`` (413) — refused at once when the container declares a longer duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from adapters import base as ab
from app.audio import BYTES_PER_SAMPLE, DecodedChunk, decode_audio
from app.credentials import key_from_request
from app.errors import GatewayError, to_gateway_error
from app.frontends.admin import error_response
from app.frontends.wire import word_json
from app.gateway import Gateway
from app.logs import session_context
from app.params import SessionRequest, parse_session_params
from app.session import Session, SessionCreated, SessionError, open_session
from auth.base import Admission, Principal

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 200 * 1024 * 1024
SPOOL_MEMORY_BYTES = 4 * 1024 * 1024  # a larger upload is spooled to a temporary file
FEED_BYTES = 32_000  # 1 s of 16 kHz PCM per send
DECODE_RATE = 16000
PCM_TYPES = ("audio/pcm", "audio/l16", "audio/raw", "audio/x-raw")
DECLARED_MARGIN = 1.1  # a declared length is trusted to within 10 % (estimates)
MAX_PARAM_CHARS = 16  # a header parameter value longer than this is refused, not parsed


def _bad_param(name: str, why: str) -> GatewayError:
    return GatewayError(4400, f"invalid Content-Type parameter {name}: {why}",
                        code="invalid_request")


def pcm_rate(content_type: str) -> int | None:
    """``audio/pcm;rate=16000`` (also audio/l16, audio/raw) -> 16000; None for a file type.

    Every parameter is validated: ``rate`` a whole number in 8000-48000, ``channels`` 1, no
    unknown parameter on a PCM type; a bad one is a 400 naming it, never a parse failure."""
    kind, *params = (part.strip() for part in content_type.split(";"))
    if kind.lower() not in PCM_TYPES:
        return None
    rate = 16000
    for param in params:
        if not param:
            continue
        name, eq, value = param.partition("=")
        name, value = name.strip().lower()[:32], value.strip().strip('"')
        if not eq:
            raise _bad_param(name, "expected name=value")
        if len(value) > MAX_PARAM_CHARS:
            raise _bad_param(name, f"value longer than {MAX_PARAM_CHARS} characters")
        if name == "rate":
            if not value.isdigit() or not 8000 <= int(value) <= 48000:
                raise _bad_param("rate", f"{value!r} is not a whole number in 8000-48000")
            rate = int(value)
        elif name == "channels":
            if value != "1":
                raise _bad_param("channels", "only mono (channels=1) PCM is accepted")
        elif name in ("encoding", "format"):
            if value.lower() not in ("s16le", "signed-integer", "pcm_s16le", "s16"):
                raise _bad_param(name, "only 16-bit little-endian PCM (s16le) is accepted")
        else:
            raise _bad_param(name, "unknown for raw PCM (use rate=, channels=1)")
    return rate


def remaining_quota(admission: Admission) -> float | None:
    """Audio seconds the key may still use (None = unlimited)."""
    quotas = getattr(admission, "quotas", None)
    if quotas is None:
        return None
    left = []
    if quotas.audio_seconds_per_day:
        left.append(quotas.audio_seconds_per_day - getattr(admission, "day_used", 0.0))
    if quotas.audio_seconds_per_month:
        left.append(quotas.audio_seconds_per_month - getattr(admission, "month_used", 0.0))
    return max(0.0, min(left)) if left else None


class Limits:
    """The two bounds on decoded audio: the cap (413) and the key's remaining quota (402)."""

    def __init__(self, cap: float, quota: float | None) -> None:
        self.cap = cap
        self.quota = quota

    def check(self, seconds: float, *, declared: bool = False,
              announced: bool = False) -> None:
        """Raise 413/402 when `seconds` (decoded so far, the length the container declares,
        or the raw PCM the Content-Length announces) is over a bound."""
        if declared:
            # Some containers only estimate their length (from the bit rate): refuse at once
            # only what is clearly over; the decoded length is held to the exact bound.
            what = f"the file declares {seconds:.0f} s"
            seconds = max(0.0, seconds / DECLARED_MARGIN - 1.0)
        elif announced:
            what = f"Content-Length announces {seconds:.0f} s of PCM"
        else:
            what = f"{seconds:.0f} s decoded so far"
        if seconds > self.cap:
            raise GatewayError(4413, f"audio longer than max_batch_seconds={self.cap:g} "
                                     f"({what})", code="payload_too_large")
        if self.quota is not None and seconds > self.quota:
            raise GatewayError(4402, f"audio quota exhausted: {self.quota:.0f} s left for this "
                                     f"key ({what})", code="quota_exceeded")


async def transcribe_file(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        params = {k: request.query_params.getlist(k) for k in request.query_params.keys()}
        session_request = parse_session_params(
            params, default_model=gateway.settings.default_model, batch=True)
        rate = pcm_rate(request.headers.get("content-type", ""))
        client = request.client.host if request.client else None
        principal = await gateway.authenticate(
            key_from_request(request.headers, request.query_params), client)
        result = await run_upload(
            gateway, session_request, principal, request.stream(), rate=rate,
            content_length=request.headers.get("content-length"),
            origin=request.headers.get("origin"))
        return render_batch(session_request.output_format, result.finals, result.language,
                            result.duration, result.session_id)
    except ClientDisconnect:
        logger.info("batch client went away before its upload was complete")
        return Response(status_code=400)  # nobody reads it
    except Exception as exc:
        # A body left unread (refused before or while reading it) is discarded by uvicorn
        # once the answer is sent, so a client still uploading receives the answer.
        return error_response(to_gateway_error(exc))


@dataclasses.dataclass(frozen=True, slots=True)
class BatchResult:
    finals: list[ab.Transcript]
    language: str
    duration: float
    session_id: str


async def run_upload(gateway: Gateway, req: SessionRequest, principal: Principal,
                     body: AsyncIterator[bytes], *, rate: int | None,
                     content_length: str | None = None,
                     origin: str | None = None) -> BatchResult:
    """Transcribe an upload through the session core, admitted before `body` is read.

    `rate` is the raw PCM rate (`pcm_rate`), or None for a file in any container, which is
    spooled and decoded within the limits. `POST /v1/transcribe` and OpenAI's
    ``/v1/audio/transcriptions`` both serve through here."""
    streaming = dataclasses.replace(req, options=dataclasses.replace(
        req.options, sample_rate=rate or DECODE_RATE, interim_results=False))
    async with open_session(gateway, streaming, principal, origin=origin) as session:
        limits = Limits(gateway.settings.max_batch_seconds, remaining_quota(session.admission))
        if rate is not None:
            length = content_length or ""
            if length.isdigit() and len(length) < 16:  # refused before any work
                limits.check(int(length) / (BYTES_PER_SAMPLE * rate), announced=True)
            audio = _pcm_body(body, session, rate, limits)
        else:
            audio = _decoded_body(body, session, limits)
        return await _transcribe(session, req, audio)


async def _body_chunks(body: AsyncIterator[bytes], session: Session) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in body:
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise GatewayError(4413, f"body over {MAX_BODY_BYTES // (1024 * 1024)} MiB",
                               code="payload_too_large")
        session.touch()  # a slow upload is not an idle session
        if chunk:
            yield chunk
    if not total:
        raise GatewayError(4400, "empty body: send an audio file or raw PCM",
                           code="invalid_request")


async def _pcm_body(body: AsyncIterator[bytes], session: Session, rate: int,
                    limits: Limits) -> AsyncGenerator[bytes, None]:
    """Raw PCM, passed on as it arrives."""
    received = 0
    async for chunk in _body_chunks(body, session):
        received += len(chunk)
        limits.check(received / (BYTES_PER_SAMPLE * rate))
        yield chunk


async def _decoded_body(body: AsyncIterator[bytes], session: Session,
                        limits: Limits) -> AsyncGenerator[bytes, None]:
    """A file: spooled, then decoded one second at a time (in a thread) within the limits."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
        async for chunk in _body_chunks(body, session):
            spool.write(chunk)
        spool.seek(0)
        chunks = decode_audio(spool, DECODE_RATE, chunk_seconds=1.0)
        pending: asyncio.Future[DecodedChunk | None] | None = None
        try:
            first = True
            while True:
                # Shielded: if we are cancelled, the chunk being decoded is let finish (below)
                # before the decoder and the spool are closed under it.
                pending = asyncio.ensure_future(asyncio.to_thread(_next_chunk, chunks))
                decoded = await asyncio.shield(pending)
                if decoded is None:
                    break
                if first and decoded.duration is not None:
                    limits.check(decoded.duration, declared=True)
                first = False
                limits.check(decoded.position)
                yield decoded.pcm
        except ValueError as exc:
            raise GatewayError(4400, f"invalid audio: {exc}") from None
        finally:
            if pending is not None and not pending.done():
                await asyncio.wait({pending}, timeout=10)
            await asyncio.to_thread(_close, chunks)


def _next_chunk(chunks: Iterator[DecodedChunk]) -> DecodedChunk | None:
    return next(chunks, None)


def _close(chunks: Iterator[DecodedChunk]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError):  # still running (a decode over 10 s): left to GC
            close()


async def _transcribe(session: Session, req: SessionRequest,
                      audio: AsyncGenerator[bytes, None]) -> BatchResult:
    finals: list[ab.Transcript] = []
    language = req.options.language

    async def feed() -> None:
        async with contextlib.aclosing(audio):  # closed (decoder, spool) even if cancelled
            async for pcm in audio:
                for i in range(0, len(pcm), FEED_BYTES):
                    await session.send_audio(pcm[i:i + FEED_BYTES])
        await session.close_stream()

    feeder = asyncio.create_task(feed())
    events = session.events()
    try:
        while True:
            next_event = asyncio.ensure_future(anext(events))
            await asyncio.wait({next_event, feeder}, return_when=asyncio.FIRST_COMPLETED)
            failure = feeder.exception() if feeder.done() else None
            if failure is not None:  # a bad upload, a limit, a client gone
                next_event.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await next_event
                raise failure
            try:
                event = await next_event
            except StopAsyncIteration:
                break
            if isinstance(event, ab.Transcript) and event.is_final:
                finals.append(event)
            elif isinstance(event, SessionError):
                raise event.error
            elif isinstance(event, SessionCreated):
                language = event.language
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await feeder
    duration = session.audio_seconds
    logger.info("batch transcription done: %.1f s of audio", duration,
                extra=session_context(session))
    return BatchResult(finals, language, duration, session.id)


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
