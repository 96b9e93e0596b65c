"""A gateway on the local engine and on the Deepgram and OpenAI fakes, for the SDK tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.fakes.providers import Upstream, upstream
from tests.servers import Gateway, running_gateway, sessions_gone


@pytest.fixture(scope="package")
async def fakes() -> AsyncIterator[dict[str, Upstream]]:
    async with contextlib.AsyncExitStack() as stack:
        yield {p: await stack.enter_async_context(upstream(p)) for p in ("deepgram", "openai")}


@pytest.fixture(scope="package")
def compat_gateway(fakes: dict[str, Upstream]) -> Iterator[Gateway]:
    settings: dict[str, Any] = {"provider_connect_timeout": 5.0, "provider_flush_timeout": 5.0,
                                "idle_timeout": 5.0}
    for up in fakes.values():
        settings.update(up.settings())
    with running_gateway(**settings) as gw:
        yield gw


def server_state(gw: Gateway) -> Any:
    """The gateway state behind the served app (sessions still open, metrics)."""
    return gw.app.state.gateway


async def no_sessions_left(gw: Gateway) -> None:
    """The server released every session (bounded wait: the close reaches the client just
    before the session's own clean-up finishes)."""
    await sessions_gone(gw, within=10.0)


async def refused_handshake(url: str, authorization: str) -> Any:
    """The HTTP response refusing a WebSocket handshake to `url` (fails if it is accepted)."""
    import websockets

    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(url, additional_headers={"Authorization": authorization}):
            pass
    return info.value.response


async def read_until_closed(ws: Any) -> list[Any]:
    """Every JSON message until the server closes (whatever the close code)."""
    import json

    import websockets

    messages = []
    try:
        async with asyncio.timeout(30):
            while True:
                messages.append(json.loads(await ws.recv()))
    except websockets.ConnectionClosed:
        pass
    return messages
