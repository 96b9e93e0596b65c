"""JSON that `json.loads` chokes on without a JSONDecodeError (deep nesting, 5,000-digit
integers, oversized text) is a clear 4400 / error event on every front-end, before and after
authentication, never a 1011 or a traceback (issue 10 row 4)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.logcheck import LogRecords, captured_logs
from tests.servers import Gateway, sessions_gone

DEEP = "[" * 1000 + "]" * 1000  # under the size limit, over the depth limit
HUGE_DEEP = "[" * 100_000  # over the size limit too
BIG_INT = '{"type": "auth", "api_key": ' + "7" * 5000 + "}"
BAD = {"deep": (DEEP, "nested deeper than"), "huge": (HUGE_DEEP, "over the limit"),
       "big_int": (BIG_INT, "digits")}


@pytest.fixture
async def logs(gateway: Gateway) -> AsyncIterator[LogRecords]:
    with captured_logs() as records:
        yield records
        await sessions_gone(gateway)
    assert records.failures() == []


async def _messages_until_close(ws: Any) -> list[Any]:
    out: list[Any] = []
    with pytest.raises(ConnectionClosed):
        while True:
            out.append(await asyncio.wait_for(ws.recv(), 15))
    return out


async def _closed_4400(ws: Any, text: str, cause: str) -> list[Any]:
    """Send `text`: the server closes 4400 naming `cause`; the JSON messages it sent first."""
    await ws.send(text)
    frames = await _messages_until_close(ws)
    assert ws.close_code == 4400 and cause in ws.close_reason, ws.close_reason
    return [json.loads(f) for f in frames]


@pytest.mark.parametrize("kind", list(BAD))
async def test_native_auth_message_4400_naming_the_cause(gateway: Gateway, logs: LogRecords,
                                                        kind: str) -> None:
    text, cause = BAD[kind]
    url = f"{gateway.ws_url}/v1/transcribe?output_format=verbose_json"
    async with websockets.connect(url) as ws:
        errors = await _closed_4400(ws, text, cause)
    assert errors and errors[-1]["type"] == "error" and cause in errors[-1]["message"]


@pytest.mark.parametrize("kind", list(BAD))
async def test_native_session_error_event_then_goes_on(gateway: Gateway, logs: LogRecords,
                                                      kind: str) -> None:
    text, cause = BAD[kind]
    url = f"{gateway.ws_url}/v1/transcribe?output_format=verbose_json&api_key={gateway.dev_key}"
    async with websockets.connect(url) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(text)
        error = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert error["type"] == "error" and error["code"] == "invalid_message"
        assert cause in error["message"]
        await ws.send(json.dumps({"type": "close_stream"}))
        rest = [json.loads(f) for f in await _messages_until_close(ws)]
    assert ws.close_code == 1000, (ws.close_code, ws.close_reason)
    assert rest[-1]["type"] == "session.ended"


@pytest.mark.parametrize("kind", list(BAD))
async def test_prosa_token_message_4400(gateway: Gateway, logs: LogRecords, kind: str) -> None:
    text, cause = BAD[kind]
    async with websockets.connect(f"{gateway.ws_url}/v2/speech/stt") as ws:
        error = (await _closed_4400(ws, text, cause))[-1]
    assert error["type"] == "error" and cause in error["message"]


async def test_prosa_bad_text_after_configuration_is_4400(gateway: Gateway,
                                                          logs: LogRecords) -> None:
    async with websockets.connect(f"{gateway.ws_url}/v2/speech/stt",
                                  additional_headers={"x-api-key": gateway.dev_key}) as ws:
        await ws.send(json.dumps({"model": "stt-general-online"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 15))["type"] == "created"
        errors = await _closed_4400(ws, DEEP, "nested deeper")
    assert errors[-1]["type"] == "error"


@pytest.mark.parametrize("kind", list(BAD))
async def test_xrx_ignores_bad_text_and_goes_on(gateway: Gateway, logs: LogRecords,
                                               kind: str) -> None:
    text, _ = BAD[kind]
    url = f"{gateway.ws_url}/api/v1/ws?api_key={gateway.dev_key}&mode=stream"
    async with websockets.connect(url) as ws:
        await ws.send(text)  # xrx has no error message: logged and ignored
        await ws.send(b"")  # end of audio
        await _messages_until_close(ws)
    assert ws.close_code == 1000, (ws.close_code, ws.close_reason)


async def _engineio_open(url: str) -> Any:
    ws = await websockets.connect(url)
    assert (await asyncio.wait_for(ws.recv(), 10)).startswith("0")  # engine.io open
    return ws


async def _socketio_event(ws: Any) -> list[Any]:
    while True:
        packet = await asyncio.wait_for(ws.recv(), 15)
        if packet == "2":  # engine.io ping
            await ws.send("3")
            continue
        return [packet]


@pytest.mark.parametrize("kind", list(BAD))
async def test_socketio_bad_event_is_a_session_error_and_the_socket_stays(
        gateway: Gateway, logs: LogRecords, kind: str) -> None:
    text, cause = BAD[kind]
    if kind == "huge":  # Socket.IO's limit is an audio chunk's size: the depth is the cause
        cause = "nested deeper than"
    url = (f"{gateway.ws_url}/api/stt-realtime-socket/?EIO=4&transport=websocket"
           f"&api_key={gateway.dev_key}")
    ws = await _engineio_open(url)
    try:
        await ws.send("40")
        assert (await _socketio_event(ws))[0].startswith("40")
        await ws.send(f'42["audio-chunk",{text}]' if kind != "big_int" else "42" + text)
        packet = (await _socketio_event(ws))[0]
        name, data = json.loads(packet[2:])
        assert name == "session-error" and cause in data["error"], packet
        await ws.send('42["stop-session"]')  # the socket still answers
        name, data = json.loads((await _socketio_event(ws))[0][2:])
        assert name == "session-error" and "no session" in data["error"]
    finally:
        await ws.close()


async def test_socketio_bad_connect_packet_is_refused_4400(gateway: Gateway,
                                                           logs: LogRecords) -> None:
    url = f"{gateway.ws_url}/api/stt-realtime-socket/?EIO=4&transport=websocket"
    ws = await _engineio_open(url)
    try:
        await ws.send('40{"apiKey": ' + "9" * 5000 + "}")
        packet = (await _socketio_event(ws))[0]
        assert packet.startswith("44"), packet  # connect_error
        refusal = json.loads(packet[2:])
        assert refusal["data"]["code"] == 4400 and "digits" in refusal["message"]
    finally:
        await ws.close()


async def test_socketio_path_without_trailing_slash(gateway: Gateway, logs: LogRecords) -> None:
    """The route table mounts Socket.IO at its path with and without the trailing slash
    (socket.io-client's ``addTrailingSlash: false``)."""
    url = (f"{gateway.ws_url}/api/stt-realtime-socket?EIO=4&transport=websocket"
           f"&api_key={gateway.dev_key}")
    ws = await _engineio_open(url)
    try:
        await ws.send("40")
        assert (await _socketio_event(ws))[0].startswith("40")
    finally:
        await ws.close()
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        polling = await http.get("/api/stt-realtime-socket?EIO=4&transport=polling")
    assert polling.status_code == 200 and polling.text.startswith("0{")
