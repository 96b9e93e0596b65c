"""Frame size limits on a real server (issue 10 row 10): a message over ``max_frame_bytes``
*after decompression* always closes 1009 with a reason (never 1006, even while the client
keeps sending), and a frame just under the limit is accepted even when compression makes
it bigger on the wire."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.fakes.providers import Upstream, upstream
from tests.logcheck import captured_logs
from tests.servers import Gateway, running_gateway, sessions_gone

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
async def deepgram() -> AsyncIterator[Upstream]:
    async with upstream("deepgram") as up:
        yield up


@pytest.fixture(scope="module")
def served(deepgram: Upstream) -> Iterator[Gateway]:
    with running_gateway(default_model="deepgram.nova-3", **deepgram.settings()) as gw:
        yield gw


def _url(gw: Gateway) -> str:
    return f"{gw.ws_url}/v1/transcribe?output_format=verbose_json&api_key={gw.dev_key}"


async def test_incompressible_frame_just_under_the_limit_is_accepted(served: Gateway) -> None:
    audio = os.urandom(LIMIT - 2)  # whole samples; deflate makes it bigger than LIMIT
    async with websockets.connect(_url(served), max_size=None, compression="deflate") as ws:
        assert ws.protocol.extensions, "permessage-deflate was not negotiated"
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(audio)
        await ws.send(json.dumps({"type": "close_stream"}))
        messages = [json.loads(m) async for m in ws]
    assert ws.close_code == 1000, (ws.close_code, ws.close_reason)
    ended = messages[-1]
    assert ended["type"] == "session.ended"
    assert ended["usage"]["audio_seconds"] == pytest.approx(len(audio) / 32000, abs=0.01)
    await sessions_gone(served)


@pytest.mark.parametrize("payload, compression", [
    (bytes(2 * LIMIT), "deflate"),  # a few KiB on the wire, 2 MiB decompressed
    (os.urandom(LIMIT + 2), "deflate"),
    (os.urandom(LIMIT + 2), None),
    (os.urandom(3 * LIMIT), None),  # over the wire limit too
])
async def test_frame_over_the_limit_closes_1009_with_a_reason(
        served: Gateway, payload: bytes, compression: Any) -> None:
    with captured_logs() as logs:
        async with websockets.connect(_url(served), max_size=None,
                                      compression=compression) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            with pytest.raises(ConnectionClosed):
                await ws.send(payload)
                for _ in range(2000):  # a client that goes on streaming after the big frame
                    await ws.send(bytes(3200))
                    await asyncio.sleep(0.001)
                await asyncio.wait_for(ws.recv(), 15)
        assert ws.close_code == 1009, (ws.close_code, ws.close_reason)
        assert f"limit of {LIMIT} bytes" in ws.close_reason
        await sessions_gone(served)
    assert logs.failures() == []
