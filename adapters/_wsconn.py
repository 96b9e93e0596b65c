"""A lean client WebSocket for the provider adapters, on websockets' Sans-I/O protocol.

Why not ``websockets.asyncio.client``: on the relay path every audio frame and every result
crosses the upstream connection, and the asyncio client's per-message machinery (a send
context manager that drains after every frame, an assembler and a reader hand-off) cost as
much CPU as the rest of the gateway (bench/bench_relay.py). This connection writes a frame in
one synchronous step while the socket keeps up (awaiting only while the transport has asked
us to pause writing) and hands received messages straight to the one waiting reader.

The protocol itself — handshake, framing, masking, ping answers, the closing handshake and
its close codes — is websockets' Sans-I/O `ClientProtocol`
(https://websockets.readthedocs.io/en/stable/howto/sansio.html), so failures surface as the
same exceptions as with the asyncio client: `InvalidStatus` / `InvalidMessage` from
`connect`, `ConnectionClosedOK` / `ConnectionClosedError` from `recv` and `send`.
Not supported, because no provider needs them: compression, subprotocols, redirects, and
HTTP proxies (the asyncio client honours ``HTTPS_PROXY``; this one connects directly).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from typing import Self, cast

from websockets.client import ClientProtocol
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import USER_AGENT, Request, Response
from websockets.protocol import State
from websockets.uri import parse_uri

_SSL: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _SSL  # one context for every connection: loading the CA bundle is slow
    if _SSL is None:
        _SSL = ssl.create_default_context()
    return _SSL


async def connect(url: str, headers: dict[str, str], *, ping_interval: float | None = 20.0,
                  ping_timeout: float = 20.0, close_timeout: float = 2.0) -> Connection:
    """Open a WebSocket; raises ``InvalidURI``, ``InvalidStatus``, ``InvalidMessage`` or
    ``OSError`` like `websockets.asyncio.client.connect`. Bound it with ``asyncio.timeout``."""
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, max_size=None)
    request = protocol.connect()
    request.headers["User-Agent"] = f"speechgate {USER_AGENT}"
    for name, value in headers.items():
        request.headers[name] = value
    loop = asyncio.get_running_loop()
    conn = Connection(protocol, request, ping_interval=ping_interval, ping_timeout=ping_timeout,
                      close_timeout=close_timeout)
    transport, _ = await loop.create_connection(
        lambda: conn, uri.host, uri.port, ssl=_ssl_context() if uri.secure else None,
        server_hostname=uri.host if uri.secure else None)
    try:
        await conn.opened
    except BaseException:
        transport.abort()
        raise
    return conn


class Connection(asyncio.Protocol):
    """One client WebSocket: `send`, `recv` / ``async for``, `close`, `close_code`."""

    def __init__(self, protocol: ClientProtocol, request: Request, *,
                 ping_interval: float | None, ping_timeout: float, close_timeout: float) -> None:
        self.protocol = protocol
        self._request = request
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self._loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._messages: deque[str | bytes] = deque()
        self._reader: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._paused = False
        self._drainers: list[asyncio.Future[None]] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.transport: asyncio.Transport | None = None

    # ---- public API ------------------------------------------------------------------------

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        return self.protocol.close_reason

    async def send(self, message: str | bytes) -> None:
        """Send one message; awaits only while the socket's write buffer is full."""
        if self.protocol.state is not State.OPEN:
            await self._raise_closed()
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        else:
            self.protocol.send_binary(message)
        self._flush()
        if self._paused:
            waiter = self._loop.create_future()
            self._drainers.append(waiter)
            await waiter
            if self._lost.done():
                await self._raise_closed()

    async def recv(self) -> str | bytes:
        """The next message; after the close, ``ConnectionClosedOK`` or ``ConnectionClosedError``
        (only once every message received before it has been read)."""
        while not self._messages:
            if self._lost.done():
                raise self.protocol.close_exc
            self._reader = self._loop.create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        return self._messages.popleft()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str | bytes:
        from websockets.exceptions import ConnectionClosedOK

        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """The closing handshake, bounded by ``close_timeout``; then the TCP connection is gone."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
            self._expect_close()
        await self._wait_lost()

    # ---- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.protocol.send_request(self._request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._process()

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        self._process()
        # Returning None closes the transport: a WebSocket never writes after the peer's EOF.

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent; makes the state CLOSED
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if not self.opened.done():
            self.opened.set_exception(self.protocol.handshake_exc or ConnectionResetError(
                "connection closed during the opening handshake"))
        if not self._lost.done():
            self._lost.set_result(None)
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drainers, self._drainers = self._drainers, []
        for waiter in drainers:
            if not waiter.done():
                waiter.set_result(None)

    # ---- internals ---------------------------------------------------------------------------

    def _process(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Response) and self.protocol.handshake_exc is None \
                    and not self.opened.done():
                self.opened.set_result(None)
                self._schedule_ping()
        if self.protocol.handshake_exc is not None and not self.opened.done():
            self.opened.set_exception(self.protocol.handshake_exc)
        self._flush()
        if self.protocol.close_expected():
            self._expect_close()

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._deliver(bytes(frame.data), opcode is Opcode.TEXT)
            else:
                self._fragments = [bytes(frame.data)]
                self._fragment_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self._deliver(data, self._fragment_text)
        elif opcode is Opcode.PONG:
            timer = self._timers.pop("pong", None)
            if timer is not None:
                timer.cancel()
        # PING is answered and CLOSE handled by the protocol itself.

    def _deliver(self, data: bytes, text: bool) -> None:
        if text:
            try:
                self._messages.append(data.decode())
            except UnicodeDecodeError:
                self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
                return
        else:
            self._messages.append(data)
        self._wake_reader()

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def _flush(self) -> None:
        transport = self.transport
        for data in self.protocol.data_to_send():
            if transport is None or transport.is_closing():
                continue
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()

    def _expect_close(self) -> None:
        """The peer should close TCP soon; abort if it has not within ``close_timeout``."""
        if "close" not in self._timers and self.transport is not None:
            self._timers["close"] = self._loop.call_later(self.close_timeout,
                                                          self.transport.abort)

    async def _wait_lost(self) -> None:
        await asyncio.shield(self._lost)

    async def _raise_closed(self) -> None:
        if self.protocol.state is not State.CLOSED:
            self._expect_close()
            await self._wait_lost()
        raise self.protocol.close_exc

    def _schedule_ping(self) -> None:
        if self.ping_interval:
            self._timers["ping"] = self._loop.call_later(self.ping_interval, self._ping)

    def _ping(self) -> None:
        if self.protocol.state is not State.OPEN:
            return
        self.protocol.send_ping(os.urandom(4))
        self._flush()
        if "pong" not in self._timers:
            self._timers["pong"] = self._loop.call_later(self.ping_timeout, self._ping_lost)
        self._schedule_ping()

    def _ping_lost(self) -> None:
        self._timers.pop("pong", None)
        if self.protocol.state is State.OPEN:
            self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._flush()
            self._expect_close()
