"""Helpers for the end-to-end limit tests: admin calls and WebSocket sessions that are held
open, refused, or streamed, against a real gateway."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

ADMIN_TOKEN = "adm_e2e_" + "z" * 32


@dataclass
class Refusal:
    close_code: int | None
    reason: str
    error: dict[str, Any]


class Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"{refusal.close_code} {refusal.reason}")
        self.refusal = refusal


async def create_key(http_url: str, **fields: Any) -> tuple[str, str]:
    """Create a key through the admin API; returns (key id, secret)."""
    async with httpx.AsyncClient(base_url=http_url, timeout=10) as client:
        response = await client.post("/v1/admin/keys", json={"name": "e2e", **fields},
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    response.raise_for_status()
    body = response.json()
    return body["key"]["id"], body["secret"]


async def admin(http_url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=http_url, timeout=10) as client:
        return await client.request(method, path, **kwargs,
                                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


async def open_stream(ws_url: str, key: str | None, *, origin: str | None = None,
                      **params: Any) -> ClientConnection:
    """Connect (verbose_json) and return the socket once `session.created` arrived;
    raise `Refused` with the close code, reason and error event otherwise."""
    query = {"output_format": "verbose_json", **params}
    if key is not None:
        query["api_key"] = key
    headers = {"Origin": origin} if origin else {}
    ws = await websockets.connect(f"{ws_url}/v1/transcribe?{urlencode(query)}",
                                  additional_headers=headers, max_size=None)
    error: dict[str, Any] = {}
    try:
        async with asyncio.timeout(30):
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "session.created":
                    return ws
                if message.get("type") == "error":
                    error = message
    except ConnectionClosed:
        pass
    await ws.close()
    raise Refused(Refusal(ws.close_code, ws.close_reason or "", error))


async def refusal(ws_url: str, key: str | None, **kwargs: Any) -> Refusal:
    try:
        ws = await open_stream(ws_url, key, **kwargs)
    except Refused as exc:
        return exc.refusal
    await ws.close()
    raise AssertionError("the session was admitted")


async def finish(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send close_stream and read every remaining message until the server closes."""
    await ws.send(json.dumps({"type": "close_stream"}))
    messages = []
    async with asyncio.timeout(60):
        try:
            async for raw in ws:
                messages.append(json.loads(raw))
        except ConnectionClosed:
            pass
    return messages


async def read_until(ws: ClientConnection, kind: str, within: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(within):
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == kind:
                return dict(message)
    raise AssertionError(f"closed ({ws.close_code} {ws.close_reason}) before a {kind} event")
