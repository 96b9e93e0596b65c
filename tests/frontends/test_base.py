"""A connection's tasks are stopped with `stop_tasks` (`adapters._tasks.cancel_and_wait`,
tested in tests/app/test_tasks.py): a client leaving is not logged, a real failure is. And a
connection cancelled while it is closing leaves no session behind."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import websockets
from starlette.websockets import WebSocketDisconnect

from app.frontends.base import stop_tasks
from tests.servers import Gateway, sessions_gone


async def test_a_client_leaving_is_quiet_a_real_failure_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    async def fail(exc: BaseException) -> None:
        raise exc

    left = asyncio.create_task(fail(WebSocketDisconnect(1001)))
    broken = asyncio.create_task(fail(KeyError("parser bug")))
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="adapters._tasks"):
        await stop_tasks([left, broken])
    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 1 and "parser bug" in str(failures[0].exc_info[1])


async def test_connection_cancelled_mid_close_leaves_no_session(gateway: Gateway) -> None:
    """The client's connection is torn down (TCP abort, no closing handshake) right after
    close_stream, while the gateway is ending the session: its tasks are cancelled
    mid-close, and no session is left behind."""
    url = f"{gateway.ws_url}/v1/transcribe?output_format=verbose_json&api_key={gateway.dev_key}"
    state = gateway.app.state.gateway
    for _ in range(5):
        ws = await websockets.connect(url)
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(bytes(32000))
        await ws.send(json.dumps({"type": "close_stream"}))
        ws.transport.abort()  # gone mid-close, without a closing handshake
    await sessions_gone(gateway)
    assert not state.sessions
