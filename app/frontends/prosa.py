"""``GET /v2/speech/stt`` — the Prosa streaming STT protocol (shared/API.md §5).

Prosa's streaming API (https://docs2.prosa.ai/speech/stt/streaming/asyncapi/, examples at
https://docs2.prosa.ai/speech/stt/streaming/getting_started/):

1. the key in the ``x-api-key`` header, or, "if passing the api-key as HTTP header is not
   feasible", as the first message ``{"token": "..."}``;
2. a configuration message ``{"model", "label"?, "include_partial"?, "include_filler"?,
   "audio"?: {"format", "channels"?, "sample_rate"?}}`` — ``audio`` is optional, "the format
   of the audio is generally detected automatically";
3. audio as binary frames, "the audio header is expected to only be present in the first
   chunk", and "an empty byte is expected at the end of audio stream";
4. the server answers ``{"type": "created", "id"}`` when ready, then ``{"type": "partial",
   "transcript"}`` (only with ``include_partial``) and ``{"type": "result", "transcript",
   "time_start", "time_end"}``.

Prosa's own model names (``stt-general-online``...) select the gateway's default model; a
``provider.model`` id selects that model. ``language`` in the configuration is an extension
(default ``en``). Errors are sent as ``{"type": "error", "code", "message"}`` before the close
with the code of API.md §1.5.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.websockets import WebSocketDisconnect

from adapters import base as ab
from app.credentials import key_from_request
from app.errors import GatewayError
from app.frontends.base import Disconnect, Message, WebSocketFrontend
from app.frontends.prosa_decode import StreamDecoder
from app.params import SessionRequest, parse_session_params
from app.safejson import dumps_compact
from app.session import Session, SessionCreated, SessionEnded, SessionError

logger = logging.getLogger(__name__)



def _bad(field: str, why: str) -> GatewayError:
    return GatewayError(4400, f"invalid configuration {field}: {why}", code="invalid_parameter")


def parse_config(config: Any, default_model: str) -> tuple[SessionRequest, dict[str, Any]]:
    """A Prosa configuration message -> our session request and the audio description."""
    if not isinstance(config, dict):
        raise _bad("message", "expected a JSON object with model, label, include_partial")
    model = config.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "expected a string")
    # Prosa's model names (stt-general-online...) mean "the default engine" here.
    model_id = model.strip() if model and "." in model else default_model
    partial = config.get("include_partial", False)
    if not isinstance(partial, bool):
        raise _bad("include_partial", "expected true or false")
    audio = config.get("audio") or {}
    if not isinstance(audio, dict):
        raise _bad("audio", "expected an object {format, channels, sample_rate}")
    fmt = audio.get("format")
    rate = audio.get("sample_rate", 16000)
    channels = audio.get("channels", 1)
    if fmt is not None and not isinstance(fmt, str):
        raise _bad("audio.format", "expected a string such as wav, mp3, ogg or pcm")
    if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
        raise _bad("audio.sample_rate", "expected an integer 8000-48000")
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 8:
        raise _bad("audio.channels", "expected an integer 1-8")
    params = {"model": [model_id], "output_format": ["json"],
              "interim_results": [str(partial).lower()], "sample_rate": [str(rate)]}
    if isinstance(config.get("language"), str):
        params["language"] = [config["language"]]
    request = parse_session_params(params, default_model=default_model)
    return request, {"format": (fmt or "").lower(), "sample_rate": rate, "channels": channels}


# ------------------------------------------------------------------------ audio decoding

class ProsaConnection(WebSocketFrontend):
    label = "prosa"

    def error_frame(self, error: GatewayError) -> str | None:
        return dumps_compact({"type": "error", **error.to_json(), "close_code": error.close_code})

    async def _serve(self) -> None:
        secret = key_from_request(self.ws.headers, self.ws.query_params)
        if secret is None:
            first = await self._receive_json("token")
            token = first.get("token") if isinstance(first, dict) else None
            if not isinstance(token, str) or not token:
                raise GatewayError(4401, 'missing API key: send the x-api-key header or '
                                         '{"token": "..."} as the first message',
                                   code="missing_key")
            secret = token
        principal = await self.gateway.authenticate(secret, self.client_host)
        config = await self._receive_json("configuration")
        if isinstance(config, dict) and set(config) == {"token"}:
            config = await self._receive_json("configuration")  # token sent as well
        request, audio = parse_config(config, self.gateway.settings.default_model)
        label = config.get("label") if isinstance(config, dict) else None
        async with self._open_session(request, principal) as session:
            await self._run(session, audio, label)

    async def _receive_json(self, what: str) -> Any:
        timeout = self.gateway.settings.auth_timeout
        try:
            async with asyncio.timeout(timeout):
                frame = await self.read_frame()
        except TimeoutError:
            raise GatewayError(4408, f"no {what} message within {timeout:g} s") from None
        if isinstance(frame, Disconnect):
            raise WebSocketDisconnect(frame.code)
        if isinstance(frame, bytes):
            code = 4401 if what == "token" else 4400
            raise GatewayError(code, f"audio before the {what} message")
        if frame.error is not None:
            raise GatewayError(4400, f"{frame.error} (in the {what} message)",
                               code="invalid_message")
        return frame.value

    async def _run(self, session: Session, audio: dict[str, Any], label: Any) -> None:
        decoder = StreamDecoder(session.send_audio, session.request.options.sample_rate,
                                declared_format=audio["format"], channels=audio["channels"])
        try:
            await self._supervise(session, self._read(session, decoder),
                                  self._write(session, label))
        finally:
            await decoder.aclose()

    async def _read(self, session: Session, decoder: StreamDecoder) -> None:
        while True:
            frame = await self.read_frame()
            if isinstance(frame, Disconnect):
                return
            if isinstance(frame, Message):
                # Text after the configuration means nothing in Prosa's protocol; valid JSON
                # is taken as a sign of life, anything else ends the session 4400 (its errors
                # are fatal).
                frame.json()
                session.touch()
                continue
            if not frame:  # "an empty byte is expected at the end of audio stream"
                await decoder.end()
                await session.close_stream()
                return
            session.touch()
            await self._forward(decoder.feed(frame))

    async def _write(self, session: Session, label: Any) -> None:
        async for event in session.events():
            if isinstance(event, SessionCreated):
                created: dict[str, Any] = {"type": "created", "id": event.session_id,
                                           "model": event.model}
                if label is not None:
                    created["label"] = label
                await self._send(dumps_compact(created))
            elif isinstance(event, ab.Transcript):
                await self._send(dumps_compact({
                    "type": "result" if event.is_final else "partial",
                    "transcript": event.text, "time_start": event.start,
                    "time_end": event.end}))
            elif isinstance(event, SessionError):
                await self._fail(event.error)
            elif isinstance(event, SessionEnded):
                await self._close(1000, "session ended")
