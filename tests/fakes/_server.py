"""A loopback WebSocket server base for the provider fakes (``websockets`` asyncio server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tests.speech import pcm as speech_pcm

# The audio most tests send, and the words in it (tests/speech.py).
BECKETT_SECONDS = len(speech_pcm("beckett.wav")) / 32000


@dataclass
class SessionLog:
    """What one upstream session saw: for tests to judge the adapter."""

    path: str
    headers: dict[str, str]
    query: dict[str, list[str]]
    messages: list[dict[str, Any]] = field(default_factory=list)  # text messages received
    message_times: list[float] = field(default_factory=list)
    audio_bytes: int = 0
    frames: int = 0
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def types(self) -> list[str]:
        return [str(m.get("type")) for m in self.messages]


def http_error(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    h = Headers({"Content-Type": "text/plain", **(headers or {})})
    return Response(status, "Error", h, body.encode())


class RecordedSessions:
    """Every connection a fake served, as a `SessionLog`, and a bounded wait for its end."""

    sessions: list[SessionLog]

    async def wait_closed(self, index: int = -1, within: float = 10.0) -> SessionLog:
        log = self.sessions[index]
        async with asyncio.timeout(within):
            await log.closed.wait()
        return log


class WsFake(RecordedSessions, ABC):
    """Subclasses implement `judge(request)` (handshake) and `session(ws, log)`."""

    def __init__(self) -> None:
        self.sessions: list[SessionLog] = []
        self._server: Server | None = None
        self.port = 0
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def judge(self, request: Request) -> Response | None:
        return None

    @abstractmethod
    async def session(self, ws: ServerConnection, log: SessionLog) -> None:
        """Speak the provider's protocol on one accepted connection."""

    async def __aenter__(self) -> WsFake:
        # A short close timeout: after an error close, a client still pushing audio gets its
        # TCP close quickly even though our read side is paused by flow control.
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._process,
                                   close_timeout=1, max_size=None)
        self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else 0
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()

    def _process(self, connection: ServerConnection, request: Request) -> Response | None:
        return self.judge(request)

    async def _handle(self, ws: ServerConnection) -> None:
        from urllib.parse import parse_qs, urlsplit

        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        log = SessionLog(parts.path, {k.lower(): v for k, v in ws.request.headers.raw_items()},
                         parse_qs(parts.query))
        self.sessions.append(log)
        try:
            await self.session(ws, log)
        except Exception:  # noqa: BLE001 - a peer that vanished ends the session
            pass
        finally:
            log.close_code = ws.close_code
            log.closed.set()



def record_text(log: SessionLog, raw: str) -> dict[str, Any]:
    import time

    message = json.loads(raw)
    log.messages.append(message)
    log.message_times.append(time.monotonic())
    return message


class AsgiFake(RecordedSessions, ABC):
    """A Starlette app served by uvicorn on a free loopback port, in the test's event loop
    (for fakes with HTTP endpoints: Gladia's session POST, the transcription REST APIs)."""

    def __init__(self) -> None:
        self.port = 0
        self.sessions = []
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @abstractmethod
    def app(self) -> Any:
        """The ASGI app serving the provider's HTTP API."""

    async def __aenter__(self) -> AsgiFake:
        import uvicorn

        from tests.servers import free_port

        self.port = free_port()
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off", ws="websockets-sansio")
        self._server = uvicorn.Server(config)
        self._server.capture_signals = contextlib.nullcontext  # the test runner owns signals
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.01)
        return self

    def stopping(self) -> None:  # noqa: B027 - optional hook
        """Called before shutdown: release any handler a fault keeps waiting."""

    async def __aexit__(self, *exc: object) -> None:
        self.stopping()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self._task


class Inbox:
    """Reads a connection eagerly into an unbounded queue, so a fake can process at its own
    pace (`Pacer`) while the transport keeps flowing (pings are still answered), like a
    service that buffers what it received and transcribes it at its own speed.

    `recv` returns one message or raises when the connection ends; the exception is handed
    to `get()` after every message that came before it.
    """

    def __init__(self, recv: Any) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._pump(recv))

    async def _pump(self, recv: Any) -> None:
        try:
            while True:
                self._queue.put_nowait(await recv())
        except Exception as exc:  # noqa: BLE001 - the end of the connection, for get()
            self._queue.put_nowait(_Ended(exc))

    async def get(self) -> Any:
        item = await self._queue.get()
        if isinstance(item, _Ended):
            self._queue.put_nowait(item)
            raise item.exc
        return item

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


@dataclass
class _Ended:
    exc: Exception


class Pacer:
    """Processes audio at `speed` times real time (None: at once), like a real recognizer
    working through a backlog: a client that sends faster than that waits for its results."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self._clock: float | None = None

    async def hold(self, seconds: float) -> None:
        """Wait until `seconds` more of audio are processed."""
        if not self.speed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._clock = max(self._clock or now, now) + seconds / self.speed
        await asyncio.sleep(self._clock - now)


class Latency:
    """Sends a fake's answers `seconds` after it produced them, in order, like a recognizer's
    processing delay (0: at once). `flush()` waits until everything produced went out."""

    def __init__(self, send: Any, seconds: float = 0.0) -> None:
        self._send = send
        self.seconds = seconds
        self._queue: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def send(self, data: Any) -> None:
        if not self.seconds:
            await self._send(data)
            return
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._pump())
        self._queue.put_nowait((loop.time() + self.seconds, data))

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await self._queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                await self._send(data)
            finally:
                self._queue.task_done()

    async def flush(self) -> None:
        if self._task is not None:
            await self._queue.join()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
