"""``GET /v1/transcribe`` — the native streaming WebSocket (shared/API.md §1)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from starlette.websockets import WebSocket, WebSocketDisconnect

from app.credentials import key_from_request
from app.errors import GatewayError
from app.frontends.base import Disconnect, FrameRelay, Message
from app.frontends.wire import WireFormatter
from app.gateway import Gateway
from app.params import OUTPUT_FORMATS, parse_session_params
from app.session import Session, SessionEnded, SessionError, SessionEvent

logger = logging.getLogger(__name__)


class NativeConnection(FrameRelay):
    def __init__(self, websocket: WebSocket, gateway: Gateway) -> None:
        super().__init__(websocket, gateway)
        fmt = websocket.query_params.get("output_format", "text")
        self.formatter = WireFormatter(fmt if fmt in OUTPUT_FORMATS else "text")

    def error_frame(self, error: GatewayError) -> str | None:
        return self.formatter.render_error(error)

    async def _serve(self) -> None:
        query = self.ws.query_params
        request = parse_session_params(
            {k: query.getlist(k) for k in query.keys()},
            default_model=self.gateway.settings.default_model)
        self.formatter = WireFormatter(request.output_format)
        secret = key_from_request(self.ws.headers, query)
        if secret is None:
            secret = await self._auth_message()
        principal = await self.gateway.authenticate(secret, self.client_host)
        async with self._open_session(request, principal) as session:
            await self._run(session)

    async def _auth_message(self) -> str:
        """Wait for ``{"type": "auth", "api_key": ...}`` (§1.1 method 4)."""
        timeout = self.gateway.settings.auth_timeout
        try:
            async with asyncio.timeout(timeout):
                frame = await self.read_frame()
        except TimeoutError:
            raise GatewayError(4408, f"no key: send an auth message within {timeout:g} s, "
                                     "or use a header or api_key") from None
        if isinstance(frame, Disconnect):
            raise WebSocketDisconnect(frame.code)
        if isinstance(frame, bytes):
            raise GatewayError(4401, "audio before authentication: send "
                                     '{"type": "auth", "api_key": ...} first')
        data = frame.json()  # 4400 naming the cause when it is not acceptable JSON
        if not isinstance(data, dict) or data.get("type") != "auth" \
                or not isinstance(data.get("api_key"), str):
            raise GatewayError(4401, 'missing key: first message must be {"type": "auth", '
                                     '"api_key": ...}')
        return str(data["api_key"])

    async def _run(self, session: Session) -> None:
        events = session.events()
        # session.created goes out before anything else, error events included.
        await self._deliver(await anext(events))
        await self._supervise(session, self._read(session), self._write(events))

    async def _audio_after_end(self) -> None:
        await self._error("invalid_message", "audio after close_stream is ignored")

    async def _control(self, session: Session, message: Message) -> None:
        if message.error is not None:
            await self._error("invalid_message", message.error)
            return
        data = message.value
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "finalize":
            await session.finalize()
        elif kind == "close_stream":
            await session.close_stream()
        elif kind == "keepalive":
            session.touch()
        elif kind == "auth":
            session.touch()  # already authenticated; harmless
        else:
            shown = kind if isinstance(kind, str) else type(data).__name__
            await self._error("invalid_message", f"unknown message type {shown!r:.60}; "
                                                 "expected finalize, close_stream, keepalive "
                                                 "or auth")

    async def _write(self, events: AsyncIterator[SessionEvent]) -> None:
        async for event in events:
            await self._deliver(event)

    async def _deliver(self, event: SessionEvent) -> None:
        frame = self.formatter.render(event)
        if frame is not None:
            await self._send(frame)
        if isinstance(event, SessionError):
            self.gateway.metrics.session_error(event.error.close_code)
            await self._close(event.error.close_code, event.error.reason)
        elif isinstance(event, SessionEnded):
            await self._close(1000, "session ended")

    async def _error(self, code: str, message: str) -> None:
        """A non-fatal error event (json and verbose_json formats)."""
        if self.formatter.output_format == "verbose_json":
            await self._send(json.dumps({"type": "error", "code": code, "message": message}))
        elif self.formatter.output_format == "json":
            await self._send(json.dumps({"error": {"code": code, "message": message}}))
