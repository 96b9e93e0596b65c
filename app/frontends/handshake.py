"""What the SDK-compatible front-ends (Deepgram ``/v1/listen``, OpenAI ``/v1/realtime``)
share: keys carried in ``Sec-WebSocket-Protocol``, and refusals answered on the handshake with
an HTTP status (as those services do) instead of an accepted-then-closed socket.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from abc import abstractmethod
from typing import Any

from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.errors import GatewayError, to_gateway_error
from app.frontends.base import WebSocketFrontend
from app.session import SessionEnded, SessionError, SessionEvent

# uvicorn's websockets-sansio protocol logs "ASGI callable returned without completing
# handshake." at ERROR after every denial response (it only counts accept and close as an end
# of the handshake). A refused key is not a server error: that one record is dropped, and only
# for the connection that sent the denial (the flag lives in its task's context).
_DENIED: contextvars.ContextVar[bool] = contextvars.ContextVar("speechgate_denied",
                                                               default=False)


class _DeniedHandshakeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_DENIED.get() and record.getMessage().startswith(
            "ASGI callable returned without completing handshake"))


_FILTER = _DeniedHandshakeFilter()
if _FILTER not in logging.getLogger("uvicorn.error").filters:
    logging.getLogger("uvicorn.error").addFilter(_FILTER)


def offered_subprotocols(ws: WebSocket) -> list[str]:
    return [str(p).strip() for p in ws.scope.get("subprotocols", []) if str(p).strip()]


def deepgram_subprotocol_key(ws: WebSocket) -> tuple[str | None, str | None]:
    """``Sec-WebSocket-Protocol: token, <key>`` (also ``bearer, <jwt>``) -> (key, protocol to
    echo on accept)."""
    offered = offered_subprotocols(ws)
    for index, protocol in enumerate(offered):
        if protocol.lower() in ("token", "bearer"):  # the key follows its scheme
            key = offered[index + 1] if index + 1 < len(offered) else None
            return key, protocol
    return None, None


def openai_subprotocol_key(ws: WebSocket) -> tuple[str | None, str | None]:
    """``Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.<key>`` -> (key, "realtime")."""
    offered = offered_subprotocols(ws)
    prefix = "openai-insecure-api-key."
    key = next((p[len(prefix):] for p in offered if p.startswith(prefix)), None)
    echo = "realtime" if "realtime" in offered else None
    return (key or None), echo


async def deny(ws: WebSocket, error: GatewayError, body: dict[str, object],
               headers: dict[str, str]) -> None:
    """Refuse the handshake with the error's HTTP status (a close before accept when the
    server does not offer the denial-response extension)."""
    if ws.application_state != WebSocketState.CONNECTING:
        return
    if ws.client_state == WebSocketState.CONNECTING:
        await ws.receive()  # the websocket.connect message
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        _DENIED.set(True)
        response = Response(json.dumps(body), status_code=error.http_status,
                            media_type="application/json", headers=headers)
        with contextlib.suppress(OSError, RuntimeError):
            await ws.send_denial_response(response)
        return
    with contextlib.suppress(OSError, RuntimeError):
        await ws.close(error.close_code, error.reason)


class DenyingFrontend(WebSocketFrontend):
    """A front-end whose refusals before `_accept` are HTTP statuses on the handshake (`deny`,
    with the body and headers of `_denial`); after it, closes naming the cause as usual."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._accepted = False

    async def serve(self) -> None:
        try:
            await self._serve()
        except WebSocketDisconnect:
            return
        except Exception as exc:
            error = to_gateway_error(exc)
            if self._accepted:
                await self._fail(error)
            else:
                self.gateway.metrics.session_error(error.close_code)
                await deny(self.ws, error, *self._denial(error))

    async def _accept(self, subprotocol: str | None,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await self.ws.accept(subprotocol=subprotocol, headers=headers)
        self._accepted = True

    async def _ended_by(self, event: SessionEvent) -> bool:
        """Whether `event` ends the session; if so, the connection closes (after an error
        frame and with the error's close code for a `SessionError`)."""
        if isinstance(event, SessionError):
            self.gateway.metrics.session_error(event.error.close_code)
            await self._send(self.error_frame(event.error) or "")
            await self._close(event.error.close_code, event.error.reason)
            return True
        if isinstance(event, SessionEnded):
            await self._close(1000, "")
            return True
        return False

    @abstractmethod
    def _denial(self, error: GatewayError) -> tuple[dict[str, object], dict[str, str]]:
        """The provider's error body and headers for a refused handshake."""
