"""A small asyncio client for Speechgate's WebSocket API, importable by applications.

    client = SpeechgateClient("ws://127.0.0.1:8000", api_key="sg_...")
    async for event in client.transcribe_file("talk.mp3", output_format="verbose_json"):
        print(event)

Audio is decoded with PyAV (any container), streamed as 16-bit PCM, paced in real time or
as fast as the gateway accepts it (its backpressure). Server errors raise `SpeechgateError`
with the close code and reason. A stream the server closes with "try again" (a rolling
deploy's 1012, a dropped connection) is resumed on a new connection without losing or
repeating a final (`ReconnectPolicy`, `app.resume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import urlencode

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from adapters._tasks import cancel_and_wait
from app.audio import decode_audio
from app.resume import RETRY_CLOSE_CODES, ReconnectPolicy, ReplayBuffer, Timeline

Event = dict[str, Any]
DEFAULT_RECONNECT = ReconnectPolicy()


class SpeechgateError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class SpeechgateClient:
    def __init__(self, url: str = "ws://127.0.0.1:8000", api_key: str | None = None,
                 *, open_timeout: float = 30.0,
                 reconnect: ReconnectPolicy | None = DEFAULT_RECONNECT) -> None:
        """`reconnect`: how to resume a stream the server closed with "try again" (1012...);
        None to fail on the first close instead."""
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.open_timeout = open_timeout
        self.reconnect = reconnect

    @property
    def http_url(self) -> str:
        return self.url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)

    async def models(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.get(f"{self.http_url}/v1/models")
            response.raise_for_status()
            models: list[dict[str, Any]] = response.json()["models"]
            return models

    async def stream(self, chunks: AsyncIterator[bytes] | Iterable[bytes], *,
                     sample_rate: int = 16000, realtime: bool = False,
                     on_sent: Callable[[float], None] | None = None,
                     on_reconnect: Callable[[Event], None] | None = None,
                     **params: Any) -> AsyncIterator[Event]:
        """Stream PCM chunks; yield server messages (dicts; text format: ``{"text": ...}``).

        Ends after the server closes with 1000; raises `SpeechgateError` on any other close.
        A close that means "try again" (1001, 1006, 1012, 1013, 1014) is followed by a new
        connection that replays the audio since the last final (`app.resume`); the events
        continue on one timeline. verbose_json callers see a ``reconnected`` event then, and
        `on_reconnect` (any format) is called with it.
        """
        output_format = str(params.get("output_format") or "text")
        query: dict[str, Any] = {"sample_rate": sample_rate}
        for name, value in params.items():
            if value is None:
                continue
            query[name] = ("true" if value else "false") if isinstance(value, bool) else value
        if self.reconnect is not None:
            # Resuming needs every final's end time: ask for verbose_json, render the caller's
            # format here, with the interim results that format has by default.
            query.setdefault("interim_results",
                             "true" if output_format == "verbose_json" else "false")
            query["output_format"] = "verbose_json"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = f"{self.url}/v1/transcribe?{urlencode(query, doseq=True)}"
        policy = self.reconnect or ReconnectPolicy(attempts=0)
        run = _Run(chunks, sample_rate, realtime, on_sent, policy, output_format, on_reconnect)
        try:
            attempt = 0
            while True:
                if run.connections == 0:
                    ws = await websockets.connect(url, additional_headers=headers,
                                                  max_size=None, open_timeout=self.open_timeout,
                                                  ping_interval=None)
                else:
                    ws, attempt = await self._reconnect(url, headers, run, attempt)
                finals_before = run.finals
                async with ws:
                    events = (run.plain(ws, output_format) if self.reconnect is None
                              else run.resumable(ws, attempt))
                    async with contextlib.aclosing(events):
                        async for event in events:
                            yield event
                if run.failures:
                    raise run.failures[0]
                code = ws.close_code if ws.close_code is not None else 1006
                if code == 1000 or code not in RETRY_CLOSE_CODES:
                    for deferred in run.deferred:
                        rendered = run.timeline.render(deferred)
                        if rendered is not None:
                            yield rendered
                run.deferred.clear()
                if code == 1000:
                    return
                if run.finals > finals_before:
                    attempt = 0  # progress was made: the count starts again
                attempt += 1
                if code not in RETRY_CLOSE_CODES or attempt > policy.attempts:
                    if run.held_error is not None:
                        rendered = run.timeline.render(run.held_error)
                        if rendered is not None:
                            yield rendered
                    raise SpeechgateError(code, ws.close_reason or "connection lost")
                run.last_close = (code, ws.close_reason or "connection lost")
                run.held_error = None
        finally:
            await run.aclose()

    async def _reconnect(self, url: str, headers: dict[str, str], run: _Run,
                         attempt: int) -> tuple[Any, int]:
        """A new connection within the policy's attempts; connection failures count too."""
        policy = run.policy
        while True:
            await asyncio.sleep(policy.delay(attempt))
            try:
                ws = await websockets.connect(url, additional_headers=headers,
                                              max_size=None, open_timeout=self.open_timeout,
                                                  ping_interval=None)
                return ws, attempt
            except InvalidStatus as exc:
                if exc.response.status_code < 500 or attempt >= policy.attempts:
                    raise
            except (OSError, TimeoutError, InvalidHandshake):
                if attempt >= policy.attempts:
                    raise
            attempt += 1

    async def transcribe_file(self, path: str, *, realtime: bool = False,
                              on_sent: Callable[[float], None] | None = None,
                              duration_hint: Callable[[float | None], None] | None = None,
                              on_reconnect: Callable[[Event], None] | None = None,
                              **params: Any) -> AsyncGenerator[Event, None]:
        """Decode `path` (any format PyAV reads) and stream it at 16 kHz."""
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=50)
        loop = asyncio.get_running_loop()

        def decode() -> None:
            try:
                first = True
                for chunk in decode_audio(path, 16000, chunk_seconds=0.1):
                    if first and duration_hint is not None:
                        loop.call_soon_threadsafe(duration_hint, chunk.duration)
                        first = False
                    asyncio.run_coroutine_threadsafe(queue.put(chunk.pcm), loop).result()
                asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                asyncio.run_coroutine_threadsafe(queue.put(exc), loop).result()

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        decoder = loop.run_in_executor(None, decode)
        try:
            async for event in self.stream(chunks(), sample_rate=16000, realtime=realtime,
                                           on_sent=on_sent, on_reconnect=on_reconnect,
                                           **params):
                yield event
        finally:
            # Unblock the decoder thread if we stopped early.
            while not decoder.done():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                await asyncio.sleep(0.01)


FRAME_BYTES = 32000  # replayed audio goes out in 1 s frames


class _Run:
    """One logical stream across its connections: the audio source (read once), the replay
    buffer and the timeline."""

    def __init__(self, chunks: AsyncIterator[bytes] | Iterable[bytes], rate: int,
                 realtime: bool, on_sent: Callable[[float], None] | None,
                 policy: ReconnectPolicy, output_format: str,
                 on_reconnect: Callable[[Event], None] | None = None) -> None:
        self.source = self._each(chunks)
        self.on_reconnect = on_reconnect
        self.pending: asyncio.Future[bytes] | None = None  # next chunk, survives a lost send
        self.source_done = False
        self.rate, self.realtime, self.on_sent = rate, realtime, on_sent
        self.policy = policy
        self.buffer = ReplayBuffer(rate, policy.max_replay_seconds)
        self.timeline = Timeline(output_format)
        self.failures: list[BaseException] = []
        self.finals = 0
        self.held_error: Event | None = None
        self.deferred: list[Event] = []  # errors that only matter if we do not reconnect
        self.last_close: tuple[int, str] | None = None
        self.started: float | None = None
        self.connections = 0

    @staticmethod
    async def _each(chunks: AsyncIterator[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
        if hasattr(chunks, "__aiter__"):
            async for c in chunks:
                yield c
        else:
            for c in chunks:
                yield c

    async def aclose(self) -> None:
        await cancel_and_wait([self.pending], expected=(Exception,))
        with contextlib.suppress(Exception):
            await self.source.aclose()  # type: ignore[attr-defined]

    async def _next_chunk(self) -> bytes | None:
        if self.pending is None:
            self.pending = asyncio.ensure_future(anext(self.source))
        try:
            # Shielded: if this connection dies meanwhile (this task is cancelled), the chunk
            # stays pending, done or not, and the next connection's sender takes it.
            chunk = await asyncio.shield(self.pending)
        except StopAsyncIteration:
            self.pending = None
            return None
        self.pending = None
        return chunk

    async def _send(self, ws: Any, replay: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            for i in range(0, len(replay), FRAME_BYTES):
                await ws.send(replay[i:i + FRAME_BYTES])
            while not self.source_done:
                chunk = await self._next_chunk()
                if chunk is None:
                    self.source_done = True
                    break
                if self.started is None:
                    self.started = loop.time()
                self.buffer.add(chunk)  # kept before sending: a lost send is replayed
                sent = self.buffer.seconds(self.buffer.end)
                if self.on_sent is not None:
                    self.on_sent(sent)
                await ws.send(chunk)
                if self.realtime:
                    delay = self.started + sent - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
            await ws.send(json.dumps({"type": "close_stream"}))
        except ConnectionClosed:
            return  # the receiver sees the close and decides
        except Exception as exc:
            # Our side failed (e.g. undecodable file): remember why, end the session.
            self.failures.append(exc)
            await ws.close(1000, "client stopped")

    async def _connection(self, ws: Any, replay: bytes) -> AsyncGenerator[str | bytes, None]:
        sender = asyncio.create_task(self._send(ws, replay))
        try:
            async for raw in ws:
                yield raw
        except ConnectionClosed:
            pass
        finally:
            await cancel_and_wait([sender], expected=(Exception,))

    async def plain(self, ws: Any, output_format: str) -> AsyncGenerator[Event, None]:
        """No resuming: the server's frames as they come, in the requested format."""
        self.connections += 1
        frames = self._connection(ws, b"")
        async with contextlib.aclosing(frames):
            async for raw in frames:
                message = raw if isinstance(raw, str) else raw.decode()
                yield {"text": message} if output_format == "text" else json.loads(message)

    async def resumable(self, ws: Any, attempt: int) -> AsyncGenerator[Event, None]:
        replay = b""
        lost = 0.0
        self.connections += 1
        if self.connections > 1:
            replay = bytes(self.buffer.data)
            lost = self.buffer.seconds(self.buffer.lost)
            self.buffer.lost = 0
            self.timeline.resume(self.buffer.seconds(self.buffer.start))
        frames = self._connection(ws, replay)
        async with contextlib.aclosing(frames):
            async for raw in frames:
                event: Event = json.loads(raw)
                kind = event.get("type")
                if kind == "error" and event.get("code") == "invalid_message":
                    # We send only audio and one close_stream: this is our audio arriving after
                    # the server began to drain (even after its fatal error, whose close waits
                    # for the session to end). It is replayed if the close says "try again".
                    self.deferred.append(event)
                    continue
                if self.held_error is not None:  # it was not fatal after all: deliver it
                    rendered = self.timeline.render(self.held_error)
                    self.held_error = None
                    if rendered is not None:
                        yield rendered
                if kind == "error":
                    self.held_error = event  # fatal or not: the next message or the close tells
                    continue
                if kind == "session.created" and self.timeline.created:
                    code, reason = self.last_close or (1006, "connection lost")
                    resumed: Event = {
                        "type": "reconnected", "session_id": event.get("session_id"),
                        "attempt": attempt, "code": code, "reason": reason,
                        "resumed_at": round(self.timeline.offset, 3),
                        "replayed_seconds": round(self.buffer.seconds(len(replay)), 3),
                        "lost_seconds": round(lost, 3)}
                    if self.on_reconnect is not None:
                        self.on_reconnect(resumed)
                    if self.timeline.output_format == "verbose_json":
                        yield resumed
                    continue
                if kind == "session.created":
                    self.timeline.created = True
                shifted = self.timeline.shift(event)
                if kind == "transcript" and shifted.get("is_final"):
                    self.finals += 1
                    self.buffer.drop_before(self.timeline.last_final_end)
                rendered = self.timeline.render(shifted)
                if rendered is not None:
                    yield rendered
