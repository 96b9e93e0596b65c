"""A small asyncio client for Speechgate's WebSocket API, importable by applications.

    client = SpeechgateClient("ws://127.0.0.1:8000", api_key="sg_...")
    async for event in client.transcribe_file("talk.mp3", output_format="verbose_json"):
        print(event)

Audio is decoded with PyAV (any container), streamed as 16-bit PCM, paced in real time or
as fast as the gateway accepts it (its backpressure). Server errors raise `SpeechgateError`
with the close code and reason.
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
from websockets.exceptions import ConnectionClosed

from app.audio import decode_audio

Event = dict[str, Any]


class SpeechgateError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class SpeechgateClient:
    def __init__(self, url: str = "ws://127.0.0.1:8000", api_key: str | None = None,
                 *, open_timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.open_timeout = open_timeout

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
                     **params: Any) -> AsyncIterator[Event]:
        """Stream PCM chunks; yield server messages (dicts; text format: ``{"text": ...}``).

        Ends after the server closes with 1000; raises `SpeechgateError` on any other close.
        """
        query: dict[str, Any] = {"sample_rate": sample_rate}
        for name, value in params.items():
            if value is None:
                continue
            query[name] = ("true" if value else "false") if isinstance(value, bool) else value
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = f"{self.url}/v1/transcribe?{urlencode(query, doseq=True)}"
        text_format = query.get("output_format", "text") == "text"
        failures: list[BaseException] = []
        # No pings: sending faster than real time, our pong would wait behind our own audio
        # while the gateway is not reading (backpressure) and time the connection out.
        async with websockets.connect(url, additional_headers=headers, max_size=None,
                                      open_timeout=self.open_timeout,
                                      ping_interval=None) as ws:
            sender = asyncio.create_task(
                self._send(ws, chunks, sample_rate, realtime, on_sent, failures))
            try:
                async for raw in ws:
                    message = raw if isinstance(raw, str) else raw.decode()
                    yield {"text": message} if text_format else json.loads(message)
            except ConnectionClosed:
                pass
            finally:
                sender.cancel()
                with contextlib.suppress(BaseException):
                    await sender
            if failures:
                raise failures[0]
            code = ws.close_code if ws.close_code is not None else 1006
            if code != 1000:
                raise SpeechgateError(code, ws.close_reason or "connection lost")

    async def _send(self, ws: Any, chunks: AsyncIterator[bytes] | Iterable[bytes],
                    rate: int, realtime: bool, on_sent: Callable[[float], None] | None,
                    failures: list[BaseException]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0.0

        async def each() -> AsyncIterator[bytes]:
            if hasattr(chunks, "__aiter__"):
                async for c in chunks:
                    yield c
            else:
                for c in chunks:
                    yield c

        try:
            async for chunk in each():
                await ws.send(chunk)
                sent += len(chunk) / (2 * rate)
                if on_sent is not None:
                    on_sent(sent)
                if realtime:
                    delay = started + sent - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
        except ConnectionClosed:
            raise
        except Exception as exc:
            # Our side failed (e.g. undecodable file): remember why, end the session.
            failures.append(exc)
            await ws.close(1000, "client stopped")
            return
        await ws.send(json.dumps({"type": "close_stream"}))

    async def transcribe_file(self, path: str, *, realtime: bool = False,
                              on_sent: Callable[[float], None] | None = None,
                              duration_hint: Callable[[float | None], None] | None = None,
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
                                           on_sent=on_sent, **params):
                yield event
        finally:
            # Unblock the decoder thread if we stopped early.
            while not decoder.done():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                await asyncio.sleep(0.01)
