"""What every WebSocket front-end shares: reading frames, guarded sends, one close, failures,
task supervision.

A front-end subclasses `WebSocketFrontend` and writes only its wire protocol: how it reads the
key and options, how it turns client frames into session calls (its reader) and session events
into frames (its writer). It is served by a Starlette `WebSocketRoute` made by `websocket_route`
(see the route table in `app.main`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from adapters._tasks import cancel_and_wait
from app.errors import GatewayError, to_gateway_error
from app.gateway import Gateway
from app.params import SessionRequest
from app.safejson import MAX_JSON_BYTES, BadJson, loads_bounded
from app.session import Session, open_session
from auth.base import Principal

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """A text frame: its JSON value, or (`error`) why it is not acceptable JSON."""

    text: str
    value: Any = None
    error: str | None = None

    def json(self) -> Any:
        """The value, or a 4400 naming the cause (where a bad message is fatal)."""
        if self.error is not None:
            raise GatewayError(4400, self.error, code="invalid_message")
        return self.value


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The client left (or the server closed the connection under it)."""

    code: int
    reason: str = ""


Frame = bytes | Message | Disconnect


async def stop_tasks(tasks: Iterable[asyncio.Future[Any] | None]) -> None:
    """`cancel_and_wait` for a connection's tasks: a client leaving is not worth a log line."""
    await cancel_and_wait(tasks, expected=(GatewayError, WebSocketDisconnect, OSError))


async def touch_while_forwarding(session: Session, forwarding: Callable[[], bool]) -> None:
    """A client whose audio we are still forwarding is not idle: when its provider is slower
    than it (AssemblyAI takes audio in real time), one big frame can take longer than the idle
    timeout to forward, and its next frames wait unread behind it. Runs until cancelled."""
    interval = max(0.05, session.gateway.settings.idle_timeout / 3)
    while True:
        await asyncio.sleep(interval)
        if forwarding():
            session.touch()


class WebSocketFrontend(ABC):
    label = "native"

    def __init__(self, websocket: WebSocket, gateway: Gateway) -> None:
        self.ws = websocket
        self.gateway = gateway
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._in_session = False
        self._pending_close: tuple[int, str] | None = None
        self._forwarding = 0  # client frames being forwarded now (see `_liveness`)

    async def serve(self) -> None:
        """Accept, speak the protocol, and end every failure with a close naming its cause."""
        await self.ws.accept()
        try:
            await self._serve()
        except WebSocketDisconnect:
            return
        except Exception as exc:
            await self._fail(to_gateway_error(exc))

    @abstractmethod
    async def _serve(self) -> None:
        """The protocol: authenticate, build the request, open the session, run it."""

    @contextlib.asynccontextmanager
    async def _open_session(self, request: SessionRequest,
                            principal: Principal) -> AsyncIterator[Session]:
        """The session; a close asked for while it is open is sent once it has ended, so
        the key's lease is released (and usage written) before the client sees the close
        and may reconnect at once."""
        self._in_session = True
        try:
            async with open_session(self.gateway, request, principal,
                                    origin=self.ws.headers.get("origin")) as session:
                yield session
        finally:
            self._in_session = False
            if self._pending_close is not None:
                await self._close(*self._pending_close)

    @property
    def client_host(self) -> str | None:
        return self.ws.client.host if self.ws.client else None

    async def read_frame(self) -> Frame:
        """The client's next frame: audio (`bytes`), a text `Message` parsed within the JSON
        limits of `app.safejson`, or `Disconnect`. Raises `GatewayError` 1009 for a frame over
        ``max_frame_bytes`` (the server's protocol normally closes those before they get
        here, see `app.protocols`)."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            code = int(message.get("code") or 1005)
            if code == 1009:  # the protocol refused an oversized frame and closed
                self._closed = True
                self.gateway.metrics.session_error(1009)
                logger.info("%s: closed 1009: %s", self.label, message.get("reason") or "")
            return Disconnect(code, message.get("reason") or "")
        data = message.get("bytes")
        limit = self.gateway.settings.max_frame_bytes
        if data is not None:
            if len(data) > limit:
                raise GatewayError(1009, f"frame of {len(data)} bytes is over the limit of "
                                         f"{limit} bytes (max_frame_bytes)")
            return bytes(data)
        text = message.get("text") or ""
        try:
            return Message(text, loads_bounded(text, max_bytes=self.json_limit))
        except BadJson as exc:
            return Message(text, error=str(exc))

    @property
    def json_limit(self) -> int:
        """Largest JSON text frame `read_frame` parses (a protocol that carries base64 audio
        in JSON raises it to the frame limit)."""
        return MAX_JSON_BYTES

    def error_frame(self, error: GatewayError) -> str | None:
        """The frame announcing a fatal error before the close (None: the close says it)."""
        return None

    async def _fail(self, error: GatewayError) -> None:
        if error.close_code >= 4000 or error.close_code == 1011:
            logger.info("%s: closing %s: %s", self.label, error.close_code, error.message)
        self.gateway.metrics.session_error(error.close_code)
        frame = self.error_frame(error)
        if frame is not None:
            await self._send(frame)
        await self._close(error.close_code, error.reason)

    async def _send(self, frame: str) -> None:
        if self._closed or self.ws.application_state != WebSocketState.CONNECTED:
            return
        lock = self._send_lock  # acquired by hand: this is the relay's hot path
        await lock.acquire()
        try:
            await self.ws.send_text(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client is gone: the reader sees it
        finally:
            lock.release()

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        if self._in_session:  # sent when the session has released its lease
            self._pending_close = self._pending_close or (code, reason)
            return
        self._closed = True
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.ws.close(code, reason)

    async def _forward(self, send: Awaitable[None]) -> None:
        """Await the forwarding of one client frame (`session.send_audio`, a decoder's feed):
        while it lasts the client counts as active (`_liveness`)."""
        self._forwarding += 1
        try:
            await send
        finally:
            self._forwarding -= 1

    async def _liveness(self, session: Session) -> None:
        await touch_while_forwarding(session, lambda: self._forwarding > 0)

    async def _supervise(self, session: Session, reader: Coroutine[Any, Any, None],
                         writer: Coroutine[Any, Any, None],
                         *helpers: Coroutine[Any, Any, None]) -> None:
        """Run reader and writer until the session is over.

        The writer ends the connection (it closes after the last event). If the reader fails,
        the connection fails with its error; if the client sent end of stream, the writer
        delivers what remains; if the client left, everything stops (the session then closes
        its upstream). A failing writer fails the connection too.
        """
        read = asyncio.create_task(reader, name=f"{session.id}:{self.label}-read")
        write = asyncio.create_task(writer, name=f"{session.id}:{self.label}-write")
        helpers = (*helpers, self._liveness(session))
        tasks = [read, write, *(asyncio.create_task(h) for h in helpers)]
        try:
            done, _ = await asyncio.wait({read, write}, return_when=asyncio.FIRST_COMPLETED)
            if read in done:
                exc = read.exception()
                if exc is not None and not isinstance(exc, WebSocketDisconnect):
                    await self._fail(to_gateway_error(exc))
                elif exc is None and session.input_closed:
                    await asyncio.wait({write})  # end of stream: the remaining results
            if write.done() and not write.cancelled():
                exc = write.exception()
                if exc is not None and not isinstance(exc, WebSocketDisconnect):
                    await self._fail(to_gateway_error(exc))
        finally:
            await stop_tasks(tasks)


class FrameRelay(WebSocketFrontend):
    """A protocol of binary audio frames and JSON control messages (native, xrx, Deepgram):
    `_read` relays them until the client leaves; an empty frame ends the audio."""

    # Whether the reader stops at the client's end of audio (nothing it sends later counts).
    reads_after_end = True

    async def _read(self, session: Session) -> None:
        while True:
            frame = await self.read_frame()
            if isinstance(frame, Disconnect):
                return
            if isinstance(frame, Message):
                await self._control(session, frame)
            elif not frame:
                await session.close_stream()
                if not self.reads_after_end:
                    return
            elif session.input_closed:
                await self._audio_after_end()
            else:
                await self._audio(session, frame)

    @abstractmethod
    async def _control(self, session: Session, message: Message) -> None:
        """One text frame of the client."""

    @abstractmethod
    async def _audio_after_end(self) -> None:
        """Audio after the client's end of audio: not forwarded (tell the client, or not)."""

    async def _audio(self, session: Session, frame: bytes) -> None:
        self._forwarding += 1  # `_forward`, inlined: this is the relay's hot path
        try:
            await session.send_audio(frame)
        finally:
            self._forwarding -= 1


def websocket_route(path: str, frontend: type[WebSocketFrontend]) -> WebSocketRoute:
    """The route serving `frontend` at `path`, with the app's gateway."""
    async def endpoint(websocket: WebSocket) -> None:
        await frontend(websocket, websocket.app.state.gateway).serve()

    return WebSocketRoute(path, endpoint, name=frontend.__name__)
