"""``POST /v1/audio/transcriptions`` — OpenAI's batch transcription, served by the batch path
(`app.frontends.batch.run_upload`) of ``POST /v1/transcribe``.

Multipart fields as OpenAI takes them: ``file``, ``model`` (an OpenAI name such as
``whisper-1`` means ``openai.whisper-1``; any Speechgate id works), ``language``, ``prompt``,
``temperature``, ``response_format`` (json, text, srt, vtt, verbose_json) and
``timestamp_granularities[]`` (word, segment; with verbose_json). Errors are OpenAI's JSON
error object with the matching HTTP status.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.credentials import key_from_request
from app.errors import GatewayError, to_gateway_error
from app.frontends.batch import MAX_BODY_BYTES, pcm_rate, render_batch, run_upload
from app.gateway import Gateway
from app.params import parse_session_params

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")


def openai_error(error: GatewayError, param: str | None = None) -> JSONResponse:
    kind = "server_error" if error.http_status >= 500 else "invalid_request_error"
    code = "invalid_api_key" if error.close_code == 4401 else error.code
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return JSONResponse({"error": {"message": error.message, "type": kind, "param": param,
                                   "code": code}},
                        status_code=error.http_status, headers=headers)


class _BadField(GatewayError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(4400, message, code="invalid_value")
        self.param = param


async def _bounded(request: Request) -> AsyncGenerator[bytes, None]:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise GatewayError(4413, f"request body over {MAX_BODY_BYTES // (1024 * 1024)} "
                                     "MiB", code="payload_too_large")
        yield chunk


async def _form(request: Request) -> FormData:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise _BadField("file", "expected multipart/form-data with a file field")
    try:
        return await MultiPartParser(request.headers, _bounded(request), max_files=1,
                                     max_fields=32).parse()
    except MultiPartException as exc:
        raise _BadField("file", f"invalid multipart body: {exc.message}") from None


async def _chunks(upload: UploadFile) -> AsyncGenerator[bytes, None]:
    """The uploaded file (spooled by the multipart parser), a chunk at a time."""
    while chunk := await upload.read(64 * 1024):
        yield chunk


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadField(name, f"{name} must be a text field")
    return value.strip() or None


async def transcriptions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    form: FormData | None = None
    try:
        client = request.client.host if request.client else None
        principal = await gateway.authenticate(
            key_from_request(request.headers, request.query_params), client)
        form = await _form(request)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _BadField("file", "missing file: send the audio as the multipart field file")
        if (_text(form, "stream") or "false").lower() == "true":
            raise _BadField("stream", "stream=true (server-sent events) is not supported; "
                                      "use /v1/realtime or /v1/transcribe for streaming")
        fmt = _text(form, "response_format") or "json"
        if fmt not in RESPONSE_FORMATS:
            raise _BadField("response_format", f"response_format must be one of "
                                               f"{', '.join(RESPONSE_FORMATS)}, got {fmt[:20]!r}")
        granularities = [g for g in form.getlist("timestamp_granularities[]")
                         + form.getlist("timestamp_granularities") if isinstance(g, str)]
        for g in granularities:
            if g not in GRANULARITIES:
                raise _BadField("timestamp_granularities", f"expected word or segment, got "
                                                           f"{g[:20]!r}")
        model = _text(form, "model") or gateway.settings.default_model
        params: dict[str, list[str]] = {
            "model": [model if "." in model else f"openai.{model}"],
            "output_format": ["verbose_json"]}
        for ours, theirs in (("language", "language"), ("initial_prompt", "prompt"),
                             ("temperature", "temperature")):
            value = _text(form, theirs)
            if value is not None:
                params[ours] = [value]
        req = parse_session_params(params, default_model=gateway.settings.default_model,
                                   batch=True)
        if not upload.size:
            raise _BadField("file", "the uploaded file is empty")
        result = await run_upload(gateway, req, principal, _chunks(upload),
                                  rate=pcm_rate(upload.content_type or ""),
                                  origin=request.headers.get("origin"))
        if fmt in ("srt", "vtt", "text"):
            return render_batch(fmt, result.finals, result.language, result.duration,
                                result.session_id)
        text = " ".join(t.text.strip() for t in result.finals if t.text.strip())
        usage = {"type": "duration", "seconds": max(1, round(result.duration))}
        if fmt == "json":
            return JSONResponse({"text": text, "usage": usage})
        return JSONResponse(verbose(result.finals, text, result.language, result.duration,
                                    granularities or ["segment"]) | {"usage": usage})
    except Exception as exc:
        error = to_gateway_error(exc)
        param = exc.param if isinstance(exc, _BadField) else None
        if param is None and error.close_code == 4400 and "parameter" in error.message:
            param = error.message.split("invalid parameter ")[-1].split(":")[0]
        return openai_error(error, param)
    finally:
        if form is not None:
            await form.close()


def verbose(finals: list[Any], text: str, language: str, duration: float,
            granularities: list[str]) -> dict[str, Any]:
    """OpenAI's ``verbose_json``: segments and/or words as the granularities ask."""
    out: dict[str, Any] = {"task": "transcribe", "language": language,
                           "duration": round(duration, 3), "text": text}
    if "segment" in granularities:
        out["segments"] = [{
            "id": i, "seek": 0, "start": t.start, "end": t.end, "text": t.text, "tokens": [],
            "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 1.0,
            "no_speech_prob": 0.0} for i, t in enumerate(f for f in finals if f.text.strip())]
    if "word" in granularities:
        out["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end}
                        for t in finals for w in t.words]
    return out
