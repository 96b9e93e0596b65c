"""A plain `websockets` client for tests: stream PCM, collect every message and the close."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.exceptions import ConnectionClosed


@dataclass
class Result:
    messages: list[Any] = field(default_factory=list)  # parsed JSON, or str for text
    close_code: int | None = None
    close_reason: str = ""
    arrival: list[float] = field(default_factory=list)  # loop time of each message

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if isinstance(m, dict) and m.get("type") == kind]

    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if isinstance(m, dict)
                and m.get("type", "transcript") == "transcript" and m.get("is_final")]

    def final_text(self) -> str:
        if self.messages and all(isinstance(m, str) for m in self.messages):
            return " ".join(self.messages)
        return " ".join(m["text"] for m in self.finals())


async def transcribe(base_url: str, pcm: bytes, *, key: str | None = None,
                     params: dict[str, Any] | None = None, chunk: int = 3200,
                     headers: dict[str, str] | None = None, end: str = "close_stream",
                     realtime_rate: int | None = None, path: str = "/v1/transcribe",
                     before: list[str | bytes] | None = None) -> Result:
    """Stream `pcm` and read until the server closes.

    `end`: "close_stream" (JSON message), "empty" (empty binary frame) or "none".
    `realtime_rate`: pace chunks in real time at that sample rate (None = as fast as allowed).
    """
    query = dict(params or {})
    all_headers = dict(headers or {})
    if key is not None:
        all_headers.setdefault("Authorization", f"Bearer {key}")
    url = f"{base_url}{path}?{urlencode(query, doseq=True)}"
    result = Result()
    text_format = query.get("output_format", "text") == "text"
    loop = asyncio.get_running_loop()
    async with websockets.connect(url, additional_headers=all_headers, max_size=None) as ws:
        async def send() -> None:
            for message in before or []:
                await ws.send(message)
            start = loop.time()
            for i in range(0, len(pcm), chunk):
                await ws.send(pcm[i:i + chunk])
                if realtime_rate:
                    due = start + (i + chunk) / (2 * realtime_rate)
                    await asyncio.sleep(max(0.0, due - loop.time()))
            if end == "close_stream":
                await ws.send(json.dumps({"type": "close_stream"}))
            elif end == "empty":
                await ws.send(b"")

        sender = asyncio.create_task(send())
        try:
            async for raw in ws:
                result.arrival.append(loop.time())
                result.messages.append(raw if text_format and isinstance(raw, str)
                                       and not raw.startswith("{") else json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, ConnectionClosed):
                pass
    result.close_code = ws.close_code
    result.close_reason = ws.close_reason or ""
    return result
