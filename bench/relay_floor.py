"""The floor of the relay path on this machine, for ``bench_relay.py --floor``.

The same stack as the gateway — uvicorn with its default WebSocket implementation on uvloop,
a ``websockets`` asyncio client upstream — relaying with no gateway logic at all: no keys,
no session, no normalization beyond picking the transcript out of Deepgram's ``Results``. What
this costs is what any Python gateway on this stack pays before doing its job; the gateway's
figures are read against it.

    UPSTREAM=ws://127.0.0.1:PORT uvicorn bench.relay_floor:app
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from websockets.asyncio.client import connect

QUERY = "/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000&interim_results=true"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    upstream = await connect(os.environ["UPSTREAM"] + QUERY, compression=None, max_size=None,
                             additional_headers={"Authorization": "Token dg-bench-key"})
    await send({"type": "websocket.accept"})

    async def results() -> None:
        async for raw in upstream:
            message = json.loads(raw)
            if message.get("type") == "Results":
                text = message["channel"]["alternatives"][0]["transcript"]
                await send({"type": "websocket.send",
                            "text": json.dumps({"type": "transcript", "text": text})})

    task = asyncio.create_task(results())
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            else:  # close_stream
                await upstream.send(json.dumps({"type": "CloseStream"}))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await task
                await send({"type": "websocket.close", "code": 1000})
                return
    finally:
        task.cancel()
        await upstream.close()
