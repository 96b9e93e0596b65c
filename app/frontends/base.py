"""What every WebSocket front-end shares: guarded sends, one close, failures, task supervision.

A front-end subclasses `WebSocketFrontend` and writes only its wire protocol: how it reads the
key and options, how it turns client frames into session calls (its reader) and session events
into frames (its writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.errors import GatewayError, to_gateway_error
from app.gateway import Gateway
from app.params import SessionRequest
from app.session import Session, open_session
from auth.base import Principal

logger = logging.getLogger(__name__)


class WebSocketFrontend(ABC):
    label = "native"

    def __init__(self, websocket: WebSocket, gateway: Gateway) -> None:
        self.ws = websocket
        self.gateway = gateway
        self._send_lock = asyncio.Lock()
        self._closed = False

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

    def _open_session(self, request: SessionRequest,
                      principal: Principal) -> AbstractAsyncContextManager[Session]:
        return open_session(self.gateway, request, principal,
                            origin=self.ws.headers.get("origin"))

    @property
    def client_host(self) -> str | None:
        return self.ws.client.host if self.ws.client else None

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
        async with self._send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.ws.send_text(frame)

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.ws.close(code, reason)

    async def _supervise(self, session: Session, reader: Coroutine[Any, Any, None],
                         writer: Coroutine[Any, Any, None],
                         *helpers: Coroutine[Any, Any, None]) -> None:
        """Run reader and writer until the session is over.

        The writer ends the connection (it closes after the last event). If the reader fails,
        the connection fails with its error; if the client sent end of stream, the writer
        delivers what remains; if the client left, everything stops (the session then closes
        its upstream).
        """
        read = asyncio.create_task(reader, name=f"{session.id}:{self.label}-read")
        write = asyncio.create_task(writer, name=f"{session.id}:{self.label}-write")
        tasks = [read, write, *(asyncio.create_task(h) for h in helpers)]
        try:
            done, _ = await asyncio.wait({read, write}, return_when=asyncio.FIRST_COMPLETED)
            if read in done:
                exc = read.exception()
                if exc is not None and not isinstance(exc, WebSocketDisconnect):
                    await self._fail(to_gateway_error(exc))
                elif exc is None and session.input_closed:
                    await write  # end of stream: deliver the remaining results, then close
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task


class WebSocketFrontends:
    """The ASGI layer in front of Starlette that serves the WebSocket front-ends.

    A front-end's connection gets uvicorn's own ``receive``/``send``: through Starlette's
    router every message would also pass two exception-handling send wrappers, which a
    front-end does not need (`WebSocketFrontend.serve` turns every failure into a close).
    A module registers its endpoints as ``frontends = {path: WebSocketFrontend subclass}``.
    Everything else (HTTP, other paths) goes to `app`.
    """

    def __init__(self, app: ASGIApp, gateway: Gateway,
                 frontends: dict[str, type[WebSocketFrontend]]) -> None:
        self.app = app
        self.gateway = gateway
        self.frontends = frontends

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            frontend = self.frontends.get(scope["path"])
            if frontend is not None:
                await frontend(WebSocket(scope, receive, send), self.gateway).serve()
                return
        await self.app(scope, receive, send)
