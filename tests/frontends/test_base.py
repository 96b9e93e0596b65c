"""`cancel_and_wait`: tasks are cancelled and awaited, the caller's own cancellation is never
swallowed, and a task's real failure is logged, not lost. And a connection cancelled while it
is closing leaves no session behind."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import websockets

from app.frontends.base import cancel_and_wait
from tests.servers import Gateway, sessions_gone


async def test_cancels_and_waits_for_every_task() -> None:
    cleaned: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself awaits
            cleaned.append(name)

    tasks = [asyncio.create_task(worker(n)) for n in "abc"]
    await asyncio.sleep(0)
    await cancel_and_wait(tasks)
    assert sorted(cleaned) == ["a", "b", "c"] and all(t.cancelled() for t in tasks)


async def test_the_callers_cancellation_is_not_swallowed() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await release.wait()  # slow to finish cancelling

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    owner = asyncio.create_task(cancel_and_wait([task]))
    await asyncio.sleep(0.05)
    owner.cancel()  # the owner is cancelled while it waits
    await asyncio.sleep(0.05)
    assert not owner.done(), "the child's cleanup is still awaited"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await owner
    assert owner.cancelled() and task.cancelled()


async def test_a_real_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise KeyError("parser bug")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="app.frontends.base"):
        await cancel_and_wait([task])
    assert any(r.exc_info and "parser bug" in str(r.exc_info[1]) for r in caplog.records)


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
