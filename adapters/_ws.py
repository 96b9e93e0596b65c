"""Shared plumbing for the WebSocket provider adapters (Deepgram, AssemblyAI, OpenAI, Gladia).

`WebSocketStream` owns what every streaming provider needs on top of `SttStream`: a bounded
connect, one reader task, JSON sending, a bounded end-of-stream flush, a bounded finalize and
the mapping of handshake statuses and close frames to the `ProviderError` tree. A provider
subclass implements only its protocol: `_url`/`_headers`, `_on_message`, `_close_error` and
its audio/finalize/close messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from abc import abstractmethod
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from adapters.base import (
    AdapterContext,
    Finalized,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderWarning,
    StreamOptions,
    SttStream,
    map_transport_exception,
)

logger = logging.getLogger(__name__)

# Seconds given to the closing handshake before the TCP connection is dropped.
CLOSE_TIMEOUT = 2.0
# Quiet time after a final that answers a finalize, for providers that do not mark it.
FINALIZE_QUIET = 0.25


def http_status_error(
    provider: str,
    status: int,
    detail: str = "",
    *,
    code: str | int | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """Map an upstream HTTP status (handshake or REST) to the error tree."""
    code = code if code is not None else status
    message = f"upstream answered HTTP {status}" + (f": {detail[:80]}" if detail else "")
    kw: dict[str, Any] = {"provider": provider, "code": code}
    if status in (401, 402, 403):
        return ProviderAuthError(message, **kw)
    if status == 429:
        return ProviderRateLimited(message, retryable=True, retry_after=retry_after, **kw)
    if status in (408, 504):
        return ProviderTimeout(message, retryable=True, **kw)
    if 400 <= status < 500:
        return ProviderBadRequest(message, **kw)
    if status >= 500:
        return ProviderUnavailable(message, retryable=True, **kw)
    return ProviderProtocolError(message, **kw)


def parse_retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


async def open_websocket(
    url: str, headers: dict[str, str], *, provider: str, open_within: float
) -> ClientConnection:
    """Connect within `open_within`; handshake and transport failures become `ProviderError`s."""
    try:
        async with asyncio.timeout(open_within):
            # No permessage-deflate: PCM barely compresses and deflate is the costliest part
            # of relaying it (see bench/bench_relay.py).
            return await connect(url, additional_headers=headers, max_size=None,
                                 compression=None, open_timeout=None,
                                 close_timeout=CLOSE_TIMEOUT, ping_interval=20, ping_timeout=20)
    except InvalidStatus as exc:
        response = exc.response
        body = response.body.decode("utf-8", "replace") if response.body else ""
        # Deepgram names the cause in `dg-error` (developers.deepgram.com/changelog/2022/11/8).
        detail = response.headers.get("dg-error") or body
        raise http_status_error(
            provider, response.status_code, detail,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        ) from exc
    except InvalidURI as exc:
        raise ProviderProtocolError(f"bad upstream URL: {exc}", provider=provider) from exc
    except TimeoutError as exc:
        raise ProviderTimeout(f"no connection within {open_within:g} s", provider=provider,
                              retryable=True) from exc
    except ProviderError:
        raise
    except Exception as exc:  # noqa: BLE001 - the mapping boundary
        raise map_transport_exception(exc, provider) from exc


class WebSocketStream(SttStream):
    """A stream relayed over one provider WebSocket, with one reader task."""

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext) -> None:
        super().__init__(model, options)
        self.context = context
        self._ws: ClientConnection | None = None
        self._finalizes = 0  # finalize() calls still waiting for their Finalized
        self._finalize_timer: asyncio.TimerHandle | None = None
        self._quiet_timer: asyncio.TimerHandle | None = None
        self._error: ProviderError | None = None

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

    def _fail(self, error: ProviderError) -> None:
        if self._closed:  # after aclose, a task tripping over the closed socket is no news
            self._finish()
            return
        self._error = self._error or error
        super()._fail(error)

    def _ended_error(self) -> ProviderError:
        """What to raise to a caller once the stream has ended."""
        return self._error or ProviderProtocolError("the stream has ended",
                                                    provider=self.provider)

    # ---- plumbing ------------------------------------------------------------------------

    async def _connect(self, url: str, headers: dict[str, str]) -> None:
        self._ws = await open_websocket(url, headers, provider=self.provider,
                                        open_within=self.context.connect_timeout)

    def _start_reader(self) -> None:
        assert self._ws is not None
        self._spawn(self._read(self._ws), "reader")

    async def _read(self, ws: ClientConnection) -> None:
        try:
            await self._read_messages(ws)
        except ProviderError:
            if not self._closed:  # after aclose, a broken upstream is no news
                raise

    async def _read_messages(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue  # no provider sends audio back to us
                try:
                    message = json.loads(raw)
                except ValueError as exc:
                    raise ProviderProtocolError("malformed message from upstream",
                                                provider=self.provider, code="malformed") from exc
                if not isinstance(message, dict):
                    raise ProviderProtocolError("unexpected message from upstream",
                                                provider=self.provider, code="malformed")
                await self._on_message(message)
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

    def _closed_error(self, exc: ConnectionClosed) -> ProviderError:
        if exc.rcvd is None:
            return ProviderUnavailable("upstream connection lost", provider=self.provider,
                                       retryable=True)
        error = self._close_error(exc.rcvd.code, exc.rcvd.reason)
        return error or ProviderProtocolError("upstream closed the stream early",
                                              provider=self.provider, code=exc.rcvd.code)

    async def _send(self, data: str | bytes) -> None:
        ws = self._ws
        if ws is None:
            raise ProviderProtocolError("stream is not open", provider=self.provider)
        try:
            await ws.send(data)
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from exc

    async def _send_json(self, message: dict[str, Any]) -> None:
        await self._send(json.dumps(message))

    def _arm_flush_deadline(self, what: str) -> None:
        """After an end-of-stream request: fail with `ProviderTimeout` if no answer in time."""

        async def deadline() -> None:
            await asyncio.sleep(self.context.flush_timeout)
            raise ProviderTimeout(f"no answer to {what} within {self.context.flush_timeout:g} s",
                                  provider=self.provider, retryable=True)

        self._spawn(deadline(), "flush-deadline")

    # ---- finalize bookkeeping ---------------------------------------------------------------

    def _expect_finalized(self, delay: float | None = None, *, quiet: bool = False) -> None:
        """A finalize was sent; `_finalized()` answers it, or the bounded wait runs out
        (``quiet``: nothing may be pending upstream, so running out is not worth a warning)."""
        self._finalizes += 1
        if self._finalize_timer is not None:
            self._finalize_timer.cancel()
        loop = asyncio.get_running_loop()
        delay = self.context.flush_timeout if delay is None else delay
        self._finalize_timer = loop.call_later(delay, self._finalize_timed_out, quiet)

    def _finalize_timed_out(self, quiet: bool) -> None:
        self._finalize_timer = None
        if self._finalizes and not self._ended:
            task = asyncio.get_running_loop().create_task(
                self._release_finalizes(timed_out=not quiet))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _final_seen(self, segment_open: bool) -> None:
        """For providers with no explicit answer to a finalize (AssemblyAI, Gladia): after a
        final, with no segment open, and `FINALIZE_QUIET` s without further transcripts,
        the finalize counts as answered. A natural end-of-turn that was already in flight
        when we asked is followed by the partials of the next segment, which re-open it."""
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
        if self._finalizes and not segment_open:
            loop = asyncio.get_running_loop()
            self._quiet_timer = loop.call_later(FINALIZE_QUIET, self._quiet_elapsed)

    def _quiet_elapsed(self) -> None:
        self._quiet_timer = None
        if self._finalizes and not self._ended:
            task = asyncio.get_running_loop().create_task(self._finalized())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _finalized(self) -> None:
        """The provider answered every pending finalize: emit the acknowledgements."""
        if self._finalizes:
            await self._release_finalizes(timed_out=False)

    async def _release_finalizes(self, *, timed_out: bool) -> None:
        count, self._finalizes = self._finalizes, 0
        for timer in (self._finalize_timer, self._quiet_timer):
            if timer is not None:
                timer.cancel()
        self._finalize_timer = self._quiet_timer = None
        if timed_out and count:
            await self._emit(ProviderWarning("finalize_timeout",
                                              "provider did not confirm finalize in time"))
        for _ in range(count):
            await self._emit(Finalized())

    async def _shutdown(self) -> None:
        for timer in (self._finalize_timer, self._quiet_timer):
            if timer is not None:
                timer.cancel()
        self._finalize_timer = self._quiet_timer = None
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT + 1):
                    await ws.close()
