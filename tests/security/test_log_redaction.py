"""No key, token or provider credential in any line a gateway writes, at debug level.

A real ``python -m app`` process, every provider pointed at its fake with a secret provider key,
an admin token, and clients using every way to present a key (query ``api_key`` and ``token``,
``Authorization: Bearer``, ``X-API-Key``, the auth message, a key in
``Sec-WebSocket-Protocol``), right and wrong. Then every line of stdout and stderr is searched
for every secret, and for every 10-character piece of each secret's random part.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
import socketio
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.audio import wav_bytes
from tests.fakes.providers import CLOUD, make_fake
from tests.security.servers import LoggedGateway, logged_gateway
from tests.speech import pcm as speech_pcm
from tests.wsclient import Result, transcribe

pytestmark = pytest.mark.timeout(300)

SPEECH = speech_pcm("beckett.wav")[: 16000 * 2 * 3]  # 3 s of speech
BANNER = ("Speechgate on ", "  model: ", "  dev key: ", "  try it: ")


def random_part(secret: str) -> str:
    """The part of a secret that must never be printed (a token's key id may be)."""
    if secret.startswith("sg_tok_"):
        return secret.partition(".")[2]
    for prefix in ("sg_live_", "sg_dev_"):
        if secret.startswith(prefix):
            return secret[len(prefix):]
    return secret


def leaks(log: str, used: dict[str, str]) -> list[str]:
    found = []
    for label, secret in used.items():
        part = random_part(secret)
        pieces = {part[i:i + 10] for i in range(max(1, len(part) - 9))}
        hits = sorted(p for p in pieces if p in log)
        if secret in log or hits:
            lines = [line for line in log.splitlines() if any(p in line for p in hits)]
            found.append(f"{label}: {lines[:3]}")
    return found


@contextlib.asynccontextmanager
async def gateway_with_fakes(provider_keys: dict[str, str],
                             env: dict[str, str]) -> AsyncIterator[LoggedGateway]:
    async with contextlib.AsyncExitStack() as stack:
        for provider, key in provider_keys.items():
            fake, base = make_fake(provider, api_key=key)
            await stack.enter_async_context(fake)
            name = provider.upper()
            env[f"{name}_API_KEY"] = key
            env[f"SPEECHGATE_{name}_BASE_URL"] = base(fake)
        manager = logged_gateway(env)
        gateway = await asyncio.to_thread(manager.__enter__)
        try:
            yield gateway
        finally:
            # A clean SIGTERM shutdown, with the fakes still up to answer the drain.
            await asyncio.to_thread(manager.__exit__, None, None, None)


async def ws_session(gw: LoggedGateway, model: str, **kw: object) -> Result:
    params = dict(kw.pop("params", {}) or {})  # type: ignore[call-overload]
    params["model"] = model
    return await asyncio.wait_for(
        transcribe(gw.ws_url, SPEECH, params=params, **kw), 60)  # type: ignore[arg-type]


async def refused(url: str, **kw: object) -> int | None:
    """Open a WebSocket expected to be refused; the close code (or HTTP status)."""
    try:
        async with websockets.connect(url, **kw) as ws:  # type: ignore[arg-type]
            with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        return ws.close_code
    except InvalidStatus as exc:
        return exc.response.status_code


async def exercise(gw: LoggedGateway, admin: str, bad: dict[str, str]) -> dict[str, str]:
    """Every key method, right and wrong; returns the secrets minted on the way."""
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        created = await http.post("/v1/admin/keys", json={"name": "logtest"},
                                  headers={"Authorization": f"Bearer {admin}"})
        assert created.status_code == 201, created.text
        key = created.json()["secret"]
        wrong_admin = await http.get("/v1/admin/keys",
                                     headers={"Authorization": f"Bearer {bad['admin']}"})
        assert wrong_admin.status_code == 401
        minted = await http.post("/v1/auth/tokens", json={"ttl_seconds": 300},
                                 headers={"X-API-Key": key})
        assert minted.status_code == 201, minted.text
        token = minted.json()["token"]
        assert (await http.get(f"/v1/usage?api_key={gw.dev_key}")).status_code == 200
        assert (await http.get(f"/v1/usage?api_key={bad['query']}")).status_code == 401
        assert (await http.get("/v1/usage", params={"token": token})).status_code == 200
        batch = await http.post(f"/v1/transcribe?api_key={key}&output_format=json",
                                content=wav_bytes(SPEECH, 16000),
                                headers={"Content-Type": "audio/wav"})
        assert batch.status_code == 200, batch.text
        batch_bad = await http.post("/v1/transcribe", content=wav_bytes(SPEECH, 16000),
                                    headers={"Authorization": f"Bearer {bad['bearer']}"})
        assert batch_bad.status_code == 401

    models = {p: f"{p}.{m}" for p, (m, _) in CLOUD.items()}
    ok = await asyncio.gather(
        ws_session(gw, "local.tiny.en", params={"api_key": gw.dev_key}),
        ws_session(gw, models["deepgram"], params={"token": token}),
        ws_session(gw, models["assemblyai"], key=key),
        ws_session(gw, models["openai"], headers={"X-API-Key": gw.dev_key}),
        ws_session(gw, models["gladia"],
                   before=[json.dumps({"type": "auth", "api_key": key})]),
        ws_session(gw, models["groq"], params={"api_key": gw.dev_key},
                   headers={"Sec-WebSocket-Protocol": f"speechgate, {bad['protocol']}"}),
    )
    for result in ok:
        assert result.close_code == 1000, (result.close_code, result.close_reason)
        assert result.final_text(), result.messages

    url = f"{gw.ws_url}/v1/transcribe"
    codes = [
        await refused(f"{url}?api_key={bad['query']}"),
        await refused(f"{url}?token={bad['token']}"),
        await refused(url, additional_headers={"Authorization": f"Bearer {bad['bearer']}"}),
        await refused(url, additional_headers={"X-API-Key": bad["x-api-key"]}),
    ]
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "api_key": bad["message"]}))
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    codes.append(ws.close_code)
    assert codes == [4401] * 5, codes

    # Prosa: the key as its first message {"token": ...}; xrx: the key in the query.
    prosa = await transcribe(gw.ws_url, SPEECH, path="/v2/speech/stt", end="empty",
                             before=[json.dumps({"token": key}),
                                     json.dumps({"model": "local.tiny.en",
                                                 "audio": {"format": "pcm"}})])
    assert prosa.close_code == 1000, (prosa.close_code, prosa.close_reason)
    async with websockets.connect(f"{gw.ws_url}/v2/speech/stt") as ws:
        await ws.send(json.dumps({"token": bad["prosa"]}))
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4401
    xrx = await transcribe(gw.ws_url, SPEECH, path="/api/v1/ws", end="empty",
                           params={"api_key": key, "mode": "stream"})
    assert xrx.close_code == 1000 and xrx.messages, (xrx.close_code, xrx.close_reason)

    # Socket.IO: the key in the auth payload, in a header, in the query; right and wrong.
    for kind, value, accepted in (("auth", key, True), ("header", gw.dev_key, True),
                                  ("query", token, True), ("auth", bad["socketio"], False)):
        client = socketio.AsyncClient(reconnection=False)
        options: dict[str, object] = {"socketio_path": "/api/stt-realtime-socket",
                                      "transports": ["websocket"]}
        url = gw.http_url
        if kind == "auth":
            options["auth"] = {"apiKey": value}
        elif kind == "header":
            options["headers"] = {"x-api-key": value}
        else:
            url += f"?api_key={value}"
        try:
            await client.connect(url, **options)  # type: ignore[arg-type]
            connected = True
            await client.disconnect()
        except socketio.exceptions.ConnectionError:
            connected = False
        assert connected is accepted, (kind, connected)
    return {"created key": key, "token": token}


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_in_any_log_line_at_debug_level(log_format: str) -> None:
    provider_keys = {p: f"{p[:3]}-secret-{secrets.token_hex(16)}" for p in CLOUD}
    admin = "admin-" + secrets.token_urlsafe(24)
    bad = {name: f"wrong{name[:2]}-" + secrets.token_hex(16)
           for name in ("admin", "query", "token", "bearer", "x-api-key", "message",
                        "socketio", "prosa")}
    bad["token"] = "sg_tok_key_0123456789abcdef." + secrets.token_urlsafe(32)
    bad["protocol"] = "sg_live_" + secrets.token_urlsafe(32)
    env = {"SPEECHGATE_LOG_LEVEL": "debug", "SPEECHGATE_ADMIN_TOKEN": admin,
           "SPEECHGATE_LOG_FORMAT": log_format}
    async with gateway_with_fakes(provider_keys, env) as gw:
        minted = await exercise(gw, admin, bad)
        used = {"dev key": gw.dev_key, "admin token": admin, **minted,
                **{f"{p} key": k for p, k in provider_keys.items()},
                **{f"wrong {k}": v for k, v in bad.items()}}
    log = gw.log()

    assert leaks(log, used) == []
    # The run was logged at debug level, the lines that used to carry secrets included.
    assert "api_key=***" in log and "token=***" in log  # uvicorn's access log
    assert "websockets.client" in log  # provider handshakes at debug
    assert "Authorization: ***" in log or '"Authorization: ***' in log
    assert "Traceback" not in log
    if log_format == "json":
        entries = [json.loads(line) for line in log.splitlines()
                   if line and not line.startswith(BANNER)]
        assert entries
        for entry in entries:
            assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        batch_done = [e for e in entries if e["message"].startswith("batch transcription")]
        assert batch_done and batch_done[0]["session_id"].startswith("sess_")
        assert batch_done[0]["key_id"].startswith("key_")
