"""``GET /api/v1/ws`` — the xrx STT service protocol (shared/API.md §5), over the session core.

The xrx stack (https://github.com/8090-inc/xrx-core, ``stt/app/main.py``) runs a FastAPI
WebSocket at ``/api/v1/ws``: binary 16 kHz s16le PCM in, plain-text transcripts out, no key and
no JSON. Its orchestrator (``orchestrator/src/Session.ts``) talks to it in one of two ways, set
by the same ``STT_PROVIDER`` variable on both sides:

- ``faster_whisper`` / ``groq`` — **utterance mode**: the orchestrator runs its own VAD and sends
  one binary frame per utterance (speech plus ~250 ms of silence), then expects one text frame
  with the whole transcript of that frame; empty transcripts produce no frame. Between
  utterances it sends nothing at all, for as long as the call lasts.
- ``deepgram`` — **stream mode**: every audio chunk is forwarded as it arrives and transcripts
  come back whenever the recognizer finalizes one.

Here the model comes from ``?model=`` or the operator's `Settings.stt_provider` mapping, the
mode from ``?mode=utterance|stream``, the same mapping, or (no flag: ``auto``) the first frame:
a frame of 0.3 s or more is a whole utterance, smaller frames are a stream. Keys work as on
every endpoint (header or ``api_key``); xrx clients send none, so an operator may attribute
keyless connections to a named key (`Settings.anonymous_key_id`). Failures close with the
codes of API.md §1.5.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.websockets import WebSocket

from adapters import base as ab
from app.credentials import key_from_request
from app.errors import GatewayError, to_gateway_error
from app.frontends.base import FrameRelay, Message
from app.gateway import Gateway
from app.params import parse_session_params
from app.session import Session, SessionEnded, SessionError
from auth.base import Principal

logger = logging.getLogger(__name__)

# xrx's STT_PROVIDER values -> our model ids (None = the gateway's default model).
STT_PROVIDER_MODELS: dict[str, str | None] = {
    "faster_whisper": None,
    "groq": "groq.whisper-large-v3-turbo",
    "deepgram": "deepgram.nova-3",
}
# Providers whose xrx client streams continuously instead of sending VAD-cut utterances.
STREAMING_PROVIDERS = frozenset({"deepgram"})
MODES = ("utterance", "stream", "auto")
# A VAD-cut utterance is speech plus ~250 ms of silence: never shorter than this. Streaming
# clients send frames of 20-250 ms. The first frame tells the two apart (mode "auto").
UTTERANCE_MIN_SECONDS = 0.3


def detect_mode(frame_bytes: int, sample_rate: int) -> str:
    """``utterance`` when a frame is long enough to be a whole VAD-cut utterance, else
    ``stream`` (small frames: transcripts come back as the recognizer finalizes them)."""
    seconds = frame_bytes / (2 * sample_rate)
    return "utterance" if seconds >= UTTERANCE_MIN_SECONDS else "stream"


def configured_mode(query_mode: str | None, stt_provider: str) -> str:
    """``?mode=`` when given, ``stream`` for the streaming providers' clients, else ``auto``."""
    if query_mode:
        return query_mode
    return "stream" if stt_provider.strip().lower() in STREAMING_PROVIDERS else "auto"


def provider_model(stt_provider: str, default_model: str) -> str:
    """The model an xrx ``STT_PROVIDER`` value stands for; raises 4404 when unknown."""
    name = stt_provider.strip().lower()
    if name in STT_PROVIDER_MODELS:
        return STT_PROVIDER_MODELS[name] or default_model
    if "." in name:  # an operator may also name one of our model ids directly
        return stt_provider.strip()
    raise GatewayError(4404, f"unknown STT_PROVIDER {stt_provider[:40]!r}: expected "
                             "faster_whisper, groq, deepgram or a provider.model id",
                       code="model_not_found")


async def anonymous_principal(gateway: Gateway) -> Principal:
    """The principal for a keyless connection, when the operator enabled `anonymous_key_id`."""
    anonymous = getattr(gateway.access, "anonymous", None)
    if not gateway.settings.anonymous_key_id or anonymous is None:
        raise GatewayError(4401, "missing API key: send X-API-Key, Authorization or "
                                 "?api_key=, or set SPEECHGATE_ANONYMOUS_KEY_ID "
                                 "(anonymous_key_id)",
                           code="missing_key")
    try:
        principal: Principal = await anonymous()
    except Exception as exc:  # AccessDenied (revoked, store down) -> its close code
        raise to_gateway_error(exc) from None
    return principal


class XrxConnection(FrameRelay):
    label = "xrx"
    reads_after_end = False

    def __init__(self, websocket: WebSocket, gateway: Gateway) -> None:
        super().__init__(websocket, gateway)
        self.mode = "utterance"

    async def _serve(self) -> None:
        settings = self.gateway.settings
        query = self.ws.query_params
        params = {k: query.getlist(k) for k in query.keys() if k != "mode"}
        params["output_format"] = ["text"]
        request = parse_session_params(params, default_model=provider_model(
            settings.stt_provider, settings.default_model))
        self.mode = configured_mode(query.get("mode"), settings.stt_provider)
        if self.mode not in MODES:
            raise GatewayError(4400, "invalid parameter mode: expected utterance, stream or "
                                     "auto", code="invalid_parameter")
        secret = key_from_request(self.ws.headers, query)
        if secret is not None:
            principal = await self.gateway.authenticate(secret, self.client_host)
        else:
            principal = await anonymous_principal(self.gateway)
        async with self._open_session(request, principal) as session:
            await self._run(session)

    async def _run(self, session: Session) -> None:
        # In utterance mode xrx sends nothing between utterances; the open connection itself
        # is the activity, so it is kept alive.
        helpers = [self._keepalive(session)] if self.mode != "stream" else []
        await self._supervise(session, self._read(session), self._write(session), *helpers)

    async def _audio_after_end(self) -> None:
        pass  # xrx clients get no error events

    async def _audio(self, session: Session, frame: bytes) -> None:
        if self.mode == "auto":
            self.mode = detect_mode(len(frame), session.request.options.sample_rate)
        await super()._audio(session, frame)
        if self.mode == "utterance":
            await session.finalize()  # one frame is one utterance: transcribe it now

    async def _control(self, session: Session, message: Message) -> None:
        """xrx sends only audio; native control messages are accepted as an extension."""
        data = message.value
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "close_stream":
            await session.close_stream()
        elif kind == "finalize":
            await session.finalize()
        elif kind in ("keepalive", "auth"):
            session.touch()
        else:  # xrx has no error message: the frame is logged, and the session goes on
            logger.info("xrx session %s: ignored text frame %.40r (%s)", session.id,
                        message.text, message.error or "not a control message")

    async def _write(self, session: Session) -> None:
        pending: list[str] = []  # utterance mode: finals of the frame being transcribed
        async for event in session.events():
            if isinstance(event, ab.Transcript) and event.is_final and event.text.strip():
                if self.mode == "stream":
                    await self._send(event.text.strip())
                else:
                    pending.append(event.text.strip())
            elif isinstance(event, ab.Finalized | SessionEnded) and pending:
                await self._send(" ".join(pending))
                pending.clear()
            if isinstance(event, SessionError):
                await self._fail(event.error)
            elif isinstance(event, SessionEnded):
                await self._close(1000, "session ended")

    async def _keepalive(self, session: Session) -> None:
        interval = max(0.05, self.gateway.settings.idle_timeout / 3)
        while self.mode != "stream":  # a streaming client's silence is idleness
            session.touch()
            await asyncio.sleep(interval)
