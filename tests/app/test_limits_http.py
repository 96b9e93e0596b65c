"""Connection and HTTP limits against a real uvicorn-served gateway (issue 10 rows 4, 5, 6, 8,
9, 11): bounded JSON bodies, long URLs, slow handshakes, the admin throttle, X-Forwarded-For,
and Origin on tokens and usage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlencode

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.logcheck import LogRecords, captured_logs
from tests.servers import Gateway, running_gateway, sessions_gone

ADMIN = "sg_admin_limits_test"
# No local model to load: these tests never open a session on the default model.
QUICK = {"default_model": "deepgram.nova-3", "admin_token": ADMIN}


@pytest.fixture
def fresh() -> Iterator[Gateway]:
    """A gateway of its own (the failure table of 127.0.0.1 starts empty)."""
    with running_gateway(**QUICK) as gw:
        yield gw


@pytest.fixture
def logs() -> Iterator[LogRecords]:
    with captured_logs() as records:
        yield records
    assert records.failures() == []


@pytest.fixture(scope="module")
def limited() -> Iterator[Gateway]:
    with running_gateway(handshake_timeout=1.0, **QUICK) as gw:
        yield gw


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    data = b""
    async with asyncio.timeout(15):
        while chunk := await reader.read(65536):
            data += chunk
    return data


# --- JSON bodies (row 4) ----------------------------------------------------------------

@pytest.mark.parametrize("body, status, cause", [
    ("[" * 100_000, 413, "request body over 65536 bytes"),
    ("[" * 1000 + "]" * 1000, 400, "nested deeper than"),
    ('{"ttl_seconds": ' + "1" * 5000 + "}", 400, "digits"),
])
async def test_token_and_admin_bodies_are_refused_naming_the_cause(
        limited: Gateway, logs: LogRecords, body: str, status: int, cause: str) -> None:
    async with httpx.AsyncClient(base_url=limited.http_url) as http:
        minted = await http.post("/v1/auth/tokens", content=body,
                                 headers={"Authorization": f"Bearer {limited.dev_key}"})
        created = await http.post("/v1/admin/keys", content=body,
                                  headers={"Authorization": f"Bearer {ADMIN}"})
    for response in (minted, created):
        assert response.status_code == status, response.text
        assert cause in response.json()["error"]["message"]


# --- URLs and handshakes (rows 5, 11) ---------------------------------------------------

async def test_200_term_vocabulary_url_is_accepted(gateway: Gateway, logs: LogRecords) -> None:
    terms = [f"term{i:03d}-" + "x" * 90 for i in range(200)]
    query = urlencode({"api_key": gateway.dev_key, "output_format": "verbose_json",
                       "custom_vocabulary": ",".join(terms)})
    url = f"{gateway.ws_url}/v1/transcribe?{query}"
    assert 8 * 1024 < len(url) < 32 * 1024, len(url)  # over websockets' 8 KiB default
    async with websockets.connect(url, max_size=None) as ws:
        created = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert created["type"] == "session.created", created
        assert created["options"]["custom_vocabulary"] in ("applied", "downgraded")
        await ws.send(json.dumps({"type": "close_stream"}))
        async for _ in ws:
            pass
    assert ws.close_code == 1000, ws.close_reason
    await sessions_gone(gateway)


async def test_url_over_32_kib_is_414(limited: Gateway, logs: LogRecords) -> None:
    long_query = urlencode({"api_key": limited.dev_key, "custom_vocabulary": "y" * 33_000})
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(f"{limited.ws_url}/v1/transcribe?{long_query}",
                                 open_timeout=15)
    assert refused.value.response.status_code == 414
    async with httpx.AsyncClient(base_url=limited.http_url) as http:
        response = await http.get(f"/v1/models?{long_query}")
    assert response.status_code == 414


async def test_headers_over_the_limit_are_431(limited: Gateway, logs: LogRecords) -> None:
    headers = {f"x-filler-{i}": "z" * 1000 for i in range(80)}
    async with httpx.AsyncClient(base_url=limited.http_url) as http:
        response = await http.get("/healthz", headers=headers)
    assert response.status_code == 431


@pytest.mark.parametrize("dribble", [False, True])
async def test_unfinished_handshake_is_dropped(limited: Gateway, logs: LogRecords,
                                               dribble: bool) -> None:
    """handshake_timeout=1: a client that never finishes its request head is dropped with 408
    (also when it keeps sending a header byte by byte)."""
    reader, writer = await asyncio.open_connection(limited.host, limited.port)
    try:
        writer.write(b"GET /v1/transcribe HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        await writer.drain()

        async def drip() -> None:
            for _ in range(200):
                await asyncio.sleep(0.1)
                writer.write(b"X-Slow: a\r\n")
                await writer.drain()

        dripper = asyncio.create_task(drip()) if dribble else None
        answer = await _read_all(reader)  # bounded: the server must close within 15 s
        if dripper is not None:
            dripper.cancel()
            with pytest.raises((asyncio.CancelledError, ConnectionError)):
                await dripper
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    finally:
        writer.close()


async def test_idle_connection_without_request_is_dropped(limited: Gateway,
                                                          logs: LogRecords) -> None:
    reader, writer = await asyncio.open_connection(limited.host, limited.port)
    try:
        answer = await _read_all(reader)
        assert answer.startswith(b"HTTP/1.1 408")
    finally:
        writer.close()


# --- throttles (rows 6, 8) ----------------------------------------------------------------

async def test_admin_throttle_is_checked_before_the_token(fresh: Gateway,
                                                          logs: LogRecords) -> None:
    async with httpx.AsyncClient(base_url=fresh.http_url) as http:
        for _ in range(20):
            wrong = await http.get("/v1/admin/keys", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        right = await http.get("/v1/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"})
    assert right.status_code == 429, right.text
    assert int(right.headers["Retry-After"]) >= 1


async def test_forwarded_for_is_not_trusted_by_default(fresh: Gateway,
                                                       logs: LogRecords) -> None:
    statuses = []
    async with httpx.AsyncClient(base_url=fresh.http_url) as http:
        for i in range(60):
            response = await http.get("/v1/usage", headers={
                "Authorization": "Bearer sg_not_a_key", "X-Forwarded-For": f"203.0.113.{i}"})
            statuses.append(response.status_code)
    assert statuses[:20] == [401] * 20
    assert statuses[20:] == [429] * 40


async def test_forwarded_for_is_trusted_from_configured_proxies(logs: LogRecords) -> None:
    with running_gateway(forwarded_allow_ips="127.0.0.1", **QUICK) as gw:
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            statuses = [(await http.get("/v1/usage", headers={
                "Authorization": "Bearer sg_not_a_key",
                "X-Forwarded-For": f"203.0.113.{i}"})).status_code for i in range(30)]
            # each address failed once; the proxy itself is not throttled
            assert statuses == [401] * 30
            ok = await http.get("/v1/usage", headers={"Authorization": f"Bearer {gw.dev_key}"})
    assert ok.status_code == 200


# --- Origin on tokens and usage (row 9) ----------------------------------------------------

@pytest.fixture
async def origin_key(limited: Gateway) -> AsyncIterator[str]:
    async with httpx.AsyncClient(base_url=limited.http_url) as http:
        created = await http.post("/v1/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"},
                                  json={"name": "web", "allowed_origins": ["https://app.example"]})
        assert created.status_code == 201, created.text
        yield created.json()["secret"]


async def test_origin_checked_on_tokens_and_usage(limited: Gateway, origin_key: str,
                                                  logs: LogRecords) -> None:
    auth = {"Authorization": f"Bearer {origin_key}"}
    async with httpx.AsyncClient(base_url=limited.http_url) as http:
        evil = {**auth, "Origin": "https://evil.example"}
        good = {**auth, "Origin": "https://app.example"}
        refused_token = await http.post("/v1/auth/tokens", headers=evil, json={})
        refused_usage = await http.get("/v1/usage", headers=evil)
        token = await http.post("/v1/auth/tokens", headers=good, json={"ttl_seconds": 60})
        usage = await http.get("/v1/usage", headers=good)
        no_origin = await http.get("/v1/usage", headers=auth)  # not a browser: no Origin
    for refused in (refused_token, refused_usage):
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "origin_not_allowed"
    assert token.status_code == 201 and token.json()["token"]
    assert usage.status_code == 200 and no_origin.status_code == 200
