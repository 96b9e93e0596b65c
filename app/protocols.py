"""uvicorn's HTTP and WebSocket protocols with the gateway's connection limits.

What uvicorn does not bound by itself, bounded here (settings in `config.Settings`):

- **Request line and headers** (`GatewayHttpProtocol`): the whole request head must arrive
  within ``handshake_timeout`` (a slow or unfinished handshake is dropped: 408, then closed);
  a request target over ``max_url_bytes`` gets HTTP 414, headers over ``max_header_bytes`` 431.
  WebSocket upgrades go through the same parser, so the limits hold for them too, and a URL of
  up to ``max_url_bytes`` is accepted (websockets' own line limit is raised to match).
- **Frames** (`GatewayWebSocketProtocol`): a message over ``max_frame_bytes`` *after
  decompression* closes 1009 with a reason. The wire limit leaves room for deflate's
  overhead, so a frame just under the limit of incompressible audio is accepted. After
  closing, the connection keeps reading (and discarding) until the client goes quiet, so the
  close frame is not lost to a TCP reset while the client is still sending: it sees 1009, not
  1006.
- **Keepalive**: uvicorn pings every ``ws_ping_interval`` and closes 1011 when no pong comes
  within ``ws_ping_timeout``. But a client's pong travels behind the audio it already sent, and
  the gateway stops reading while a provider is slower than the client (backpressure): the pong
  then sits unread for as long as we are not reading. So the pong deadline only runs while we
  read: when reading is paused, or when the client sent anything since the ping, the client is
  alive and the deadline is extended. A client we are slowing down is never closed by our
  keepalive; a silent, unresponsive one still is.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import websockets.http11
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import CloseCode
from websockets.server import ServerProtocol

logger = logging.getLogger(__name__)

# Seconds to keep reading (and discarding) after failing a WebSocket, before closing anyway.
LINGER_SECONDS = 5.0
# A client that sent nothing for this long after our close frame is done sending.
LINGER_QUIET = 0.25


@dataclass(frozen=True)
class ConnectionLimits:
    handshake_timeout: float = 10.0
    max_url_bytes: int = 32 * 1024
    max_header_bytes: int = 64 * 1024
    max_frame_bytes: int = 1024 * 1024

    @property
    def wire_frame_bytes(self) -> int:
        """The largest frame read off the wire: a compressed frame may be a little bigger
        than what it decompresses to (deflate's worst case is well under 1/8 more)."""
        return self.max_frame_bytes + self.max_frame_bytes // 8 + 1024


def limits_of(config: Config) -> ConnectionLimits:
    limits = getattr(config, "limits", None)
    return limits if isinstance(limits, ConnectionLimits) else ConnectionLimits()


def allow_long_websocket_urls(max_url_bytes: int) -> None:
    """websockets parses the upgrade request again, with its own 8 KiB line limit (a module
    setting): raise it so that every URL the HTTP parser accepts is accepted there too."""
    websockets.http11.MAX_LINE_LENGTH = max(websockets.http11.MAX_LINE_LENGTH,
                                            max_url_bytes + 64)


def _plain_response(status: int, phrase: str, text: str) -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request over a limit."""


class GatewayHttpProtocol(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits_of(config)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._refusal: tuple[int, str, str] | None = None
        self._received_at = 0.0
        self._linger_until = 0.0

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.handshake_timeout,
                                                    self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        logger.info("%s: request headers not received within %g s; connection dropped",
                    self.client[0] if self.client else "client", self.limits.handshake_timeout)
        self.transport.write(_plain_response(
            408, "Request Timeout",
            f"request headers not received within {self.limits.handshake_timeout:g} s"))
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_url_bytes:
            self._refusal = (414, "URI Too Long",
                             f"request URL over {self.limits.max_url_bytes} bytes")
            raise _Refused
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.limits.max_header_bytes:
            self._refusal = (431, "Request Header Fields Too Large",
                             f"request headers over {self.limits.max_header_bytes} bytes")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """httptools reports an exception raised in a callback as a parse error."""
        if self._refusal is None:
            super().send_400_response(msg)
            return
        status, phrase, text = self._refusal
        self._cancel_head_timer()
        logger.info("%s: %d %s", self.client[0] if self.client else "client", status, text)
        self.transport.write(_plain_response(status, phrase, text))
        self._linger_until = self.loop.time() + LINGER_SECONDS
        self._linger()

    def data_received(self, data: bytes) -> None:
        self._received_at = self.loop.time()
        if self._refusal is not None:
            return  # the rest of a refused request: read and dropped until the client stops
        super().data_received(data)

    def _linger(self) -> None:
        """Close once the client stopped sending the refused request: closing with unread
        data would reset the connection and lose the response on its way."""
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if now - self._received_at >= LINGER_QUIET or now >= self._linger_until:
            self.transport.close()
        else:
            self.loop.call_later(LINGER_QUIET, self._linger)


class _ServerConnection(ServerProtocol):
    """websockets' server protocol, with a close reason naming our frame limit."""

    def __init__(self, *args: Any, frame_limit: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frame_limit = frame_limit

    def fail(self, code: int, reason: str = "") -> None:
        if code == CloseCode.MESSAGE_TOO_BIG:
            reason = f"frame over the limit of {self.frame_limit} bytes (max_frame_bytes)"
        super().fail(code, reason)


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits_of(config)
        allow_long_websocket_urls(self.limits.max_url_bytes)  # also in worker processes
        self.conn = _ServerConnection(extensions=self.conn.available_extensions,
                                      max_size=self.limits.wire_frame_bytes,
                                      logger=logging.getLogger("uvicorn.error"),
                                      frame_limit=self.limits.max_frame_bytes)
        self.received_at = 0.0
        self._alive_since = 0.0
        self._linger_until = 0.0
        self._linger_timer: asyncio.TimerHandle | None = None

    # --- bad requests and oversized frames ------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.received_at = self.loop.time()
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None \
                and not self.transport.is_closing():
            # websockets could not parse the upgrade request: answer instead of hanging.
            self.transport.write(_plain_response(400, "Bad Request",
                                                 "invalid WebSocket upgrade request"))
            self.transport.close()

    def send_receive_event_to_app(self) -> None:
        frames = self.frames
        size = len(frames[0]) if len(frames) == 1 else sum(map(len, frames))
        if size > self.limits.max_frame_bytes and not self.close_sent:
            self.frames = []
            self.conn.fail(CloseCode.MESSAGE_TOO_BIG)
            self._fail_gracefully()
            return
        super().send_receive_event_to_app()

    def handle_parser_exception(self) -> None:
        self._fail_gracefully()

    def _fail_gracefully(self) -> None:
        """Send the close frame websockets prepared, tell the app, and linger before closing."""
        sent = self.conn.close_sent
        code, reason = (sent.code, sent.reason) if sent is not None else (1006, "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.stop_keepalive()
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self._linger_until = self.loop.time() + LINGER_SECONDS
        self._linger()

    def _linger(self) -> None:
        """Close once the client has stopped sending (or after LINGER_SECONDS): closing with
        unread data would reset the connection and lose the close frame on its way."""
        self._linger_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if now - self.received_at >= LINGER_QUIET or now >= self._linger_until:
            self.transport.close()
            return
        self._linger_timer = self.loop.call_later(LINGER_QUIET, self._linger)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    # --- keepalive -----------------------------------------------------------------------------

    def send_keepalive_ping(self) -> None:
        super().send_keepalive_ping()
        self._alive_since = self.loop.time()

    def keepalive_timeout(self) -> None:
        """No pong in time. If we are not reading (backpressure), or the client sent anything
        since the ping, its pong is behind data we have not read yet: wait again."""
        if self.read_paused or self.received_at > self._alive_since:
            self._alive_since = self.loop.time()
            assert self.ping_timeout is not None
            self.pong_timer = self.loop.call_later(self.ping_timeout, self.keepalive_timeout)
            return
        super().keepalive_timeout()
