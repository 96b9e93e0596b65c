"""Shared plumbing for the WebSocket provider adapters (Deepgram, AssemblyAI, OpenAI, Gladia).

`WebSocketStream` owns what every streaming provider needs on top of `SttStream`: a bounded
connect, one reader task, JSON sending, the mapping of handshake statuses and close frames to
the `ProviderError` tree, and one watchdog that bounds every wait by *progress*, not by a clock:

- a provider that answers nothing at all (no message, no pong to the pings we send every
  third of the window) for its stall window (`stall_window`, or
  ``AdapterContext.stall_timeout``) is declared stalled: `ProviderTimeout` (retryable, code
  ``stalled``), within a second of the window, while audio flows or after it ended;
- after the end-of-stream message, the wait lasts as long as the provider keeps answering; it
  fails with `ProviderTimeout` only after ``flush_timeout`` seconds without a message;
- a message we cannot parse or use is logged (truncated, secrets redacted) and skipped; only
  `GARBAGE_IN_A_ROW` in a row or `GARBAGE_TOTAL` in all end the stream;
- every exit (`aclose`, a failure) sends the provider's end-of-stream message if it was not
  sent yet (bounded), then closes the socket.

A provider subclass implements only its protocol: `_on_message`, `_close_error`,
`_end_of_stream` and its audio/finalize/close messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import abstractmethod
from typing import Any, ClassVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from adapters._finalize import FinalizeBookkeeping
from adapters.base import (
    AdapterContext,
    ProviderConnectionLost,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    StreamEvent,
    StreamOptions,
    SttStream,
    map_transport_exception,
)
from adapters.errors import http_status_error, parse_retry_after, provider_message, redact

__all__ = ["WebSocketStream", "http_status_error", "open_websocket", "parse_retry_after",
           "redact"]

logger = logging.getLogger(__name__)

# Seconds given to the closing handshake before the TCP connection is dropped.
CLOSE_TIMEOUT = 2.0
# Seconds given to sending the end-of-stream message on an early exit.
EOS_TIMEOUT = 1.0
# Quiet time an adapter may wait for more of an answer it cannot otherwise tell is complete
# (ElevenLabs commits); not used for finalize acknowledgements (see adapters/_finalize.py).
FINALIZE_QUIET = 0.25
# Default stall window (s) of a streaming provider; providers may set their own.
STALL_WINDOW = 10.0
# Unusable upstream messages tolerated (logged and skipped) before the stream fails.
GARBAGE_IN_A_ROW = 5
GARBAGE_TOTAL = 10
# Characters of an unusable message that go to the log.
GARBAGE_LOG_CHARS = 200
async def open_websocket(
    url: str, headers: dict[str, str], *, provider: str, open_within: float
) -> ClientConnection:
    """Connect within `open_within`; handshake and transport failures become `ProviderError`s."""
    try:
        async with asyncio.timeout(open_within):
            # No permessage-deflate: PCM barely compresses and deflate is the costliest part
            # of relaying it (see bench/bench_relay.py). No library keepalive: the stream's
            # watchdog pings and judges the answers itself.
            return await connect(url, additional_headers=headers, max_size=None,
                                 compression=None, open_timeout=None,
                                 close_timeout=CLOSE_TIMEOUT, ping_interval=None)
    except InvalidStatus as exc:
        response = exc.response
        body = response.body.decode("utf-8", "replace") if response.body else ""
        # Deepgram names the cause in `dg-error` (developers.deepgram.com/changelog/2022/11/8).
        detail = response.headers.get("dg-error") or provider_message(body)
        raise http_status_error(
            provider, response.status_code, detail,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        ) from exc
    except TimeoutError as exc:
        raise ProviderTimeout(f"no connection within {open_within:g} s", provider=provider,
                              retryable=True) from exc
    except ProviderError:
        raise
    except Exception as exc:  # noqa: BLE001 - the mapping boundary
        mapped = map_transport_exception(exc, provider)
        if mapped is None:
            raise
        raise mapped from exc


class WebSocketStream(FinalizeBookkeeping, SttStream):
    """A stream relayed over one provider WebSocket, with one reader and one watchdog."""

    # Seconds the provider may answer nothing (no message, no pong) while the stream is open.
    stall_window: ClassVar[float] = STALL_WINDOW

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext) -> None:
        super().__init__(model, options)
        self.context = context
        self._ws: ClientConnection | None = None
        self._init_finalizes()
        self._error: Exception | None = None
        self._last_heard = 0.0  # loop time of the last message or pong
        self._last_message = 0.0  # loop time of the last message
        self._flush_since: float | None = None  # loop time the end-of-stream went out
        self._eos_sent = False
        self._emitting = False  # the reader waits for room in our own event queue
        self._garbage_run = 0
        self._garbage_total = 0
        self._closer: asyncio.Task[None] | None = None

    @property
    def stall_timeout(self) -> float:
        return self.context.stall_timeout or self.stall_window

    # ---- provider hooks ------------------------------------------------------------------

    def _close_error(self, code: int, reason: str) -> ProviderError | None:
        """The error a close frame means, or None for a normal close."""
        if code in (1000, 1005):
            return None
        return ProviderUnavailable(f"upstream closed: {reason or code}", provider=self.provider,
                                   code=code, retryable=True)

    @abstractmethod
    async def _on_message(self, message: dict[str, Any]) -> None:
        """One parsed JSON message from the upstream."""

    async def _on_upstream_closed(self) -> None:
        """The upstream closed normally: emit what is still pending (then the stream ends)."""

    async def _salvage(self) -> None:
        """The stream is failing: emit what the provider already settled (e.g. final pieces
        of an open segment), so nothing received is lost."""

    def _end_of_stream(self) -> dict[str, Any] | bytes | None:
        """The provider's end-of-stream message, JSON or binary (None: closing the socket is
        the end)."""
        return None

    async def _stop_sending(self) -> None:
        """Stop any sender task before the end-of-stream message goes out on an early exit."""

    # ---- ending ----------------------------------------------------------------------------

    def _fail(self, error: Exception) -> None:
        if self._closed:  # after aclose, a task tripping over the closed socket is no news
            self._finish()
            return
        if not self._ended:
            self._error = self._error or error
        super()._fail(error)
        # Tell the provider and release the socket now: this also wakes a send blocked on a
        # dead connection.
        self._close_upstream_soon()

    def _ended_error(self) -> Exception:
        """What to raise to a caller once the stream has ended."""
        return self._error or ProviderProtocolError("the stream has ended",
                                                    provider=self.provider)

    async def _shutdown(self) -> None:
        self._cancel_finalize_timers()
        await self._stop_sending()
        await asyncio.shield(self._close_upstream_soon())

    def _close_upstream_soon(self) -> asyncio.Task[None]:
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(
                self._close_upstream(), name=f"{self.provider}:close")
        return self._closer

    async def _close_upstream(self) -> None:
        """End-of-stream message if not sent yet (bounded), then the closing handshake."""
        ws = self._ws
        if ws is None:
            return
        message = self._end_of_stream()
        if message is not None and not self._eos_sent and ws.state is State.OPEN:
            try:
                async with asyncio.timeout(EOS_TIMEOUT):
                    await ws.send(message if isinstance(message, bytes) else json.dumps(message))
                self._eos_sent = True
            except Exception:  # noqa: BLE001 - best effort: the connection may be dead
                logger.debug("%s: end-of-stream not delivered", self.provider, exc_info=True)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT + 1):
                await ws.close()
        except Exception:  # noqa: BLE001 - closing must never raise
            ws.transport.abort()

    # ---- plumbing ------------------------------------------------------------------------

    async def _connect(self, url: str, headers: dict[str, str]) -> None:
        self._ws = await open_websocket(url, headers, provider=self.provider,
                                        open_within=self.context.connect_timeout)
        self._last_heard = self._last_message = asyncio.get_running_loop().time()

    async def _receive_first(self, what: str) -> str | bytes:
        """The provider's opening message (`what`, e.g. ``Begin``), within the connect timeout."""
        assert self._ws is not None
        try:
            async with asyncio.timeout(self.context.connect_timeout):
                return await self._ws.recv()
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from exc
        except TimeoutError as exc:
            raise ProviderTimeout(f"no {what} message", provider=self.provider,
                                  retryable=True) from exc

    def _start_reader(self) -> None:
        assert self._ws is not None
        self._spawn(self._guarded(self._read_messages(self._ws)), "reader")
        self._spawn(self._guarded(self._watch(self._ws)), "watchdog")

    async def _guarded(self, work: Any) -> None:
        try:
            await work
        except ProviderError:
            if self._closed:  # after aclose, a broken upstream is no news
                return
            if not self._ended:
                await self._salvage()
            raise

    async def _read_messages(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for raw in ws:
                self._last_heard = self._last_message = loop.time()
                if isinstance(raw, bytes):
                    continue  # no provider sends audio back to us
                await self._handle(raw)
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from exc
        error = self._close_error(ws.close_code or 1005, ws.close_reason or "")
        if error is not None:
            raise error
        if not self._input_closed and not self._closed:
            raise ProviderProtocolError("upstream ended the stream unexpectedly",
                                        provider=self.provider, code=ws.close_code)
        await self._on_upstream_closed()
        self._finish()

    async def _handle(self, raw: str) -> None:
        """Parse and dispatch one text message; skip (within the budget) what is unusable."""
        try:
            message = json.loads(raw)
        except ValueError:
            self._garbage(raw, "not JSON")
            return
        if not isinstance(message, dict):
            self._garbage(raw, "not a JSON object")
            return
        try:
            await self._on_message(message)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            # A message of a known type missing or mistyping a field: unusable, like garbage.
            self._garbage(raw, f"{type(exc).__name__}: {exc}", exc)
            return
        self._garbage_run = 0

    def _garbage(self, raw: str, why: str, exc: BaseException | None = None) -> None:
        self._garbage_run += 1
        self._garbage_total += 1
        text = redact(raw[:GARBAGE_LOG_CHARS], self.context.api_key)
        logger.warning("%s: skipped an unusable upstream message (%s): %r", self.provider, why,
                       text, exc_info=exc)
        if self._garbage_run >= GARBAGE_IN_A_ROW or self._garbage_total >= GARBAGE_TOTAL:
            raise ProviderProtocolError(
                f"malformed messages from upstream ({self._garbage_total}, last: {why})",
                provider=self.provider, code="malformed", retryable=True)

    async def _watch(self, ws: ClientConnection) -> None:
        """Ping the provider and fail the stream when it stalls or stops making progress."""
        loop = asyncio.get_running_loop()
        window = self.stall_timeout
        # Checked every quarter window (at most every 2 s: a stall is declared within the
        # window + 2 s, and 200 streams cost 100 wake-ups a second, not 200).
        tick = min(2.0, window / 4, self.context.flush_timeout / 4)
        ping_every = window / 3
        last_ping = loop.time()
        pong: asyncio.Future[float] | None = None
        while not self._ended:
            await asyncio.sleep(tick)
            now = loop.time()
            if self._emitting:  # our consumer is behind: the provider is not to blame
                self._last_heard = self._last_message = now
                continue
            if now - self._last_heard > window:
                raise ProviderTimeout(f"no answer for {window:g} s (stalled)",
                                      provider=self.provider, code="stalled", retryable=True)
            if self._flush_since is not None:
                since = max(self._flush_since, self._last_message)
                if now - since > self.context.flush_timeout:
                    raise ProviderTimeout(
                        f"no progress for {self.context.flush_timeout:g} s after the end of "
                        "the stream", provider=self.provider, code="flush_timeout",
                        retryable=True)
            # A ping only when the provider has been quiet: any message is a sign of life.
            quiet_since = max(last_ping, self._last_heard)
            if now - quiet_since >= ping_every and (pong is None or pong.done()):
                last_ping = now
                pong = loop.create_future()
                self._spawn(self._ping(ws, pong), "ping")

    async def _ping(self, ws: ClientConnection, pong: asyncio.Future[float]) -> None:
        """One ping; its pong counts as a sign of life. May block while the link is full."""
        try:
            waiter = await ws.ping()
            await waiter
            self._last_heard = asyncio.get_running_loop().time()
        except ConnectionClosed:
            pass  # the reader reports a lost connection
        finally:
            if not pong.done():
                pong.set_result(0.0)

    def _closed_error(self, exc: ConnectionClosed) -> ProviderError:
        if exc.rcvd is None:
            return ProviderConnectionLost("upstream connection lost", provider=self.provider,
                                          retryable=True)
        error = self._close_error(exc.rcvd.code, exc.rcvd.reason)
        return error or ProviderProtocolError("upstream closed the stream early",
                                              provider=self.provider, code=exc.rcvd.code)

    async def _send(self, data: str | bytes) -> None:
        ws = self._ws
        if ws is None or self._ended:
            raise self._ended_error()
        try:
            await ws.send(data)
        except ConnectionClosed as exc:
            if self._ended:
                raise self._ended_error() from exc
            raise self._closed_error(exc) from exc

    async def _send_json(self, message: dict[str, Any]) -> None:
        await self._send(json.dumps(message))

    async def _send_end_of_stream(self) -> None:
        """Send the end-of-stream message (if the provider has one) and start the flush:
        from now on the stream waits as long as the provider keeps answering."""
        message = self._end_of_stream()
        if message is not None and not self._eos_sent:
            self._eos_sent = True
            await (self._send(message) if isinstance(message, bytes)
                   else self._send_json(message))
        self._begin_flush()

    def _arm_flush_deadline(self, what: str) -> None:
        """For adapters that send their end-of-stream themselves (`what`): from now on the
        stream waits as long as the provider keeps answering (`_begin_flush`)."""
        self._begin_flush()

    def _begin_flush(self) -> None:
        if self._flush_since is None:
            self._flush_since = asyncio.get_running_loop().time()

    async def _emit(self, event: StreamEvent) -> None:
        if self._ended:
            return
        if not self._events.full():
            self._events.put_nowait(event)  # the common case: no wait (the relay's hot path)
            return
        self._emitting = True
        try:
            await super()._emit(event)
        finally:
            self._emitting = False
            self._last_heard = self._last_message = asyncio.get_running_loop().time()
