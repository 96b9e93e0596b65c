"""Fuzz every front-end of a real gateway (issue 10): random query parameters, frames, JSON
messages, Socket.IO packets and HTTP bodies. Whatever a client sends, the answer is a close
code or status naming a client error — never 1011 / 500 — and the server logs no traceback
and holds no session afterwards. Seeded, bounded (a few thousand inputs); prints its rate."""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import psutil
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.fakes.providers import Upstream, upstream
from tests.logcheck import captured_logs
from tests.servers import Gateway, running_gateway, sessions_gone

SEED = int(os.environ.get("SPEECHGATE_FUZZ_SEED", "1009"))
SESSIONS = 400  # per WebSocket front-end
REQUESTS = 600
CLIENT_CODES = {1000, 1009, 4400, 4401, 4402, 4403, 4404, 4408, 4413, 4429, 4502, 4503, 4504}
ADMIN = "sg_admin_fuzz"
PARAMS = ["model", "language", "output_format", "punctuation", "diarization",
          "speakers_expected", "temperature", "initial_prompt", "custom_vocabulary",
          "interim_results", "sample_rate", "encoding", "fallback", "mode", "x-unknown"]


def junk(rng: random.Random) -> str:
    """A value a client might send, careless or hostile."""
    return rng.choice([
        lambda: "", lambda: "true", lambda: "maybe", lambda: "-1", lambda: "0", lambda: "1e309",
        lambda: "nan", lambda: "9" * rng.randint(10, 6000), lambda: "[" * rng.randint(1, 3000),
        lambda: "deepgram.nova-3", lambda: "local.tiny.en", lambda: "nope.model", lambda: "en",
        lambda: "json", lambda: "verbose_json", lambda: "16000", lambda: "48000",
        lambda: "ü\u0000\ud7ff€", lambda: '["a", 1, {"b": null}]',
        lambda: "".join(rng.choices(string.printable, k=rng.randint(1, 300))),
    ])()


def junk_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randint(0, 7 if depth < 4 else 4)
    if kind == 0:
        return junk(rng)
    if kind == 1:
        return rng.choice([None, True, False, 0, -1, 1.5, 10 ** 30])
    if kind == 2:
        return rng.choice(["finalize", "close_stream", "keepalive", "auth", "dance"])
    if kind in (3, 4):
        return rng.randint(-(2 ** 70), 2 ** 70)
    if kind == 5:
        return [junk_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["type", "api_key", "token", "model", "audio", "include_partial", "sample_rate",
            "label", junk(rng)[:20]]
    return {rng.choice(keys): junk_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def junk_text(rng: random.Random) -> str:
    return rng.choice([
        lambda: json.dumps(junk_json(rng)), lambda: json.dumps({"type": junk_json(rng)}),
        lambda: "[" * rng.randint(30, 100_000), lambda: "{" + junk(rng),
        lambda: '{"type": "auth", "api_key": ' + "1" * rng.randint(4000, 6000) + "}",
        lambda: junk(rng),
    ])()


def junk_frames(rng: random.Random) -> list[str | bytes]:
    frames: list[str | bytes] = []
    for _ in range(rng.randint(0, 6)):
        if rng.random() < 0.5:
            frames.append(rng.randbytes(rng.choice([1, 2, 3199, 3200, 20_000])))
        else:
            frames.append(junk_text(rng))
    return frames


@pytest.fixture(scope="module")
async def deepgram() -> AsyncIterator[Upstream]:
    async with upstream("deepgram") as up:
        yield up


@pytest.fixture(scope="module")
def served(deepgram: Upstream) -> Iterator[Gateway]:
    with running_gateway(default_model="deepgram.nova-3", admin_token=ADMIN,
                         failed_auth_per_minute=0, auth_timeout=2.0, idle_timeout=5.0,
                         **deepgram.settings()) as gw:
        yield gw


async def ws_case(gw: Gateway, rng: random.Random, path: str) -> int:
    query = {rng.choice(PARAMS): junk(rng) for _ in range(rng.randint(0, 5))}
    if rng.random() < 0.8:
        query["api_key"] = gw.dev_key
    url = f"{gw.ws_url}{path}?{urlencode(query)}"
    frames = junk_frames(rng)
    if path == "/v2/speech/stt":
        frames.insert(0, json.dumps(junk_json(rng)) if rng.random() < 0.5 else
                      json.dumps({"model": "stt-general-online"}))
    try:
        async with websockets.connect(url, max_size=None, open_timeout=20) as ws:
            try:
                for frame in frames:
                    await ws.send(frame)
                await ws.send(rng.choice([json.dumps({"type": "close_stream"}), b""]))
                async with asyncio.timeout(30):
                    async for _ in ws:
                        pass
            except ConnectionClosed:
                pass
        return int(ws.close_code or 1005)
    except InvalidStatus as refused:
        status = refused.response.status_code
        assert status in (400, 403, 414, 431), status
        return status


async def socketio_case(gw: Gateway, rng: random.Random) -> int:
    url = f"{gw.ws_url}/api/stt-realtime-socket/?EIO=4&transport=websocket&api_key={gw.dev_key}"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        await ws.send("40" + (json.dumps(junk_json(rng)) if rng.random() < 0.3 else ""))
        for _ in range(rng.randint(1, 6)):
            event = rng.choice(["start-session", "audio-chunk", "stop-session", junk(rng)[:20]])
            payload = junk_text(rng) if rng.random() < 0.5 else json.dumps(junk_json(rng))
            await ws.send(f'42["{event}",{payload}]' if rng.random() < 0.7 else "42" + payload)
        await ws.send("41")
    return 1000


async def http_case(http: httpx.AsyncClient, gw: Gateway, rng: random.Random) -> int:
    body = junk_text(rng).encode("utf-8", "surrogatepass")
    choice = rng.randint(0, 4)
    if choice == 0:
        response = await http.post("/v1/auth/tokens", content=body,
                                   headers={"Authorization": f"Bearer {gw.dev_key}"})
    elif choice == 1:
        response = await http.post("/v1/admin/keys", content=body,
                                   headers={"Authorization": f"Bearer {ADMIN}"})
    elif choice == 2:
        key_id = quote(junk(rng)[:40] or "k", safe="")
        response = await http.patch(f"/v1/admin/keys/{key_id}", content=body,
                                    headers={"Authorization": f"Bearer {ADMIN}"})
    elif choice == 3:
        response = await http.get("/v1/usage", params={"days": junk(rng)[:5000]},
                                  headers={"Authorization": f"Bearer {gw.dev_key}"})
    else:
        query = {rng.choice(PARAMS): junk(rng) for _ in range(rng.randint(0, 4))}
        response = await http.post(f"/v1/transcribe?{urlencode(query)}", content=bytes(3200),
                                   headers={"Authorization": f"Bearer {gw.dev_key}",
                                            "Content-Type": "audio/pcm"})
    return response.status_code


@pytest.mark.timeout(600)
async def test_fuzz_every_front_end(served: Gateway) -> None:
    rng = random.Random(SEED)
    process = psutil.Process()
    peak = process.memory_info().rss
    outcomes: dict[str, list[int]] = {}
    gate = asyncio.Semaphore(8)

    async def run(name: str, case: Any) -> None:
        nonlocal peak
        async with gate:
            outcomes.setdefault(name, []).append(await case)
            peak = max(peak, process.memory_info().rss)

    started = time.monotonic()
    with captured_logs() as logs:
        async with httpx.AsyncClient(base_url=served.http_url, timeout=30) as http:
            cases = []
            for _ in range(SESSIONS):
                for path in ("/v1/transcribe", "/v2/speech/stt", "/api/v1/ws"):
                    seed = rng.random()
                    cases.append(run(path, ws_case(served, random.Random(seed), path)))
                cases.append(run("socketio", socketio_case(served, random.Random(rng.random()))))
            for _ in range(REQUESTS):
                cases.append(run("http", http_case(http, served, random.Random(rng.random()))))
            await asyncio.gather(*cases)
        await sessions_gone(served, within=30)
    elapsed = time.monotonic() - started
    total = sum(len(v) for v in outcomes.values())
    print(f"\nfuzz seed {SEED}: {total} cases in {elapsed:.1f} s ({total / elapsed:.0f}/s), "
          f"peak RSS (test + gateway process) {peak / 2**20:.0f} MiB; outcomes: "
          + ", ".join(f"{k}: {sorted(set(v))}" for k, v in outcomes.items()))
    assert logs.failures() == []
    for name, codes in outcomes.items():
        if name == "http":
            assert all(code < 500 or code in (502, 503, 504) for code in codes), codes
        else:
            bad = [c for c in codes if c not in CLIENT_CODES | {400, 403, 414, 431}]
            assert not bad, (name, bad)
