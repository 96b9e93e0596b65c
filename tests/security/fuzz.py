"""Seeded random input against a running gateway: query parameters, headers and bodies on
``POST /v1/transcribe``, frames on the WebSocket front-ends, JSON bodies on the key-holder and
admin APIs. Shared by ``tests/security/test_fuzz.py`` and ``bench/bench_fuzz.py``.

Every answer is judged: an HTTP 500 (or a non-JSON error body), a WebSocket close 1011 or
1006 (no close frame) is a finding. The caller also reads the server's log for tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

PARAMS = ("model", "language", "sample_rate", "encoding", "output_format", "interim_results",
          "diarization", "speakers_expected", "custom_vocabulary", "fallback", "punctuation",
          "temperature", "initial_prompt", "mode", "api_key", "token", "days", "ttl_seconds")
GOOD_VALUES = ("local.tiny.en", "en", "auto", "16000", "8000", "48000", "pcm_s16le", "json",
               "verbose_json", "text", "srt", "vtt", "true", "false", "2", "0.2",
               "deepgram.nova-3", "local.tiny.en,local.tiny.en", "utterance", "stream")
WS_PATHS = ("/v1/transcribe", "/api/v1/ws", "/v2/speech/stt")
MESSAGE_TYPES = ("close_stream", "finalize", "keepalive", "auth", "configure", "start", "",
                 None, 7, "x" * 300)
CONTENT_TYPES = ("audio/wav", "audio/flac", "audio/pcm;rate=16000", "audio/pcm",
                 "audio/l16;rate=8000;channels=1", "application/json", "text/plain",
                 "multipart/form-data; boundary=x", "")


@dataclass
class Findings:
    http: Counter[int] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    sessions: int = 0
    seconds: float = 0.0

    def problem(self, what: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(what[:400])


class Fuzzer:
    def __init__(self, http_url: str, ws_url: str, key: str, admin: str | None,
                 seed: int) -> None:
        self.http_url, self.ws_url, self.key, self.admin = http_url, ws_url, key, admin
        self.seed = seed
        self.rng = random.Random(seed)
        self.found = Findings()

    # --- values ---------------------------------------------------------------------------
    def text_value(self) -> str:
        r = self.rng
        pick = r.randrange(10)
        if pick < 3:
            return r.choice(GOOD_VALUES)
        if pick == 3:
            return r.choice(("-", "")) + "9" * r.choice((1, 5, 20, 400, 2000))
        if pick == 4:
            return r.choice(("nan", "inf", "-inf", "1e309", "-0", "0x10", "1_000", "٣", "½"))
        if pick == 5:
            odd = (0, 1, 0x7F, 0xA0, 0x202E, 0xFEFF, 0x1F600)
            return "".join(chr(r.choice((*odd, r.randrange(32, 0xD7FF))))
                           for _ in range(r.randrange(1, 40)))
        if pick == 6:
            return ",".join(r.choice(GOOD_VALUES) for _ in range(r.randrange(1, 60)))
        if pick == 7:
            return ""
        return "".join(r.choice("abcxyz._-%:/;=&?") for _ in range(r.randrange(1, 30)))

    def query(self) -> str:
        r = self.rng
        parts = []
        for _ in range(r.randrange(0, 8)):
            name = r.choice(PARAMS) if r.random() < 0.8 else self.text_value()
            parts.append(f"{quote(name, safe='')}={quote(self.text_value(), safe='')}")
        if r.random() < 0.1:
            parts.append(r.choice(("%ff%fe=%c3%28", "model", "=x", "&&", "a=%zz", "%00=%00")))
        return "&".join(parts)

    def json_value(self, depth: int = 0) -> Any:
        r = self.rng
        pick = r.randrange(8 if depth < 6 else 5)
        if pick == 0:
            return r.choice((None, True, False))
        if pick == 1:
            return r.choice((0, -1, 2**63, 1.5, 1e308, r.randrange(-10**6, 10**6)))
        if pick == 2:
            return self.text_value()
        if pick == 3:
            return r.choice(GOOD_VALUES)
        if pick == 4:
            return r.choice(PARAMS)
        if pick == 5:
            return [self.json_value(depth + 1) for _ in range(r.randrange(0, 5))]
        keys = list(PARAMS) + ["type", "name", "token", "audio", "format", "config"]
        return {r.choice(keys): self.json_value(depth + 1) for _ in range(r.randrange(0, 6))}

    def json_text(self) -> str | bytes:
        """A text payload: mostly JSON objects; some hostile (deep, huge, invalid)."""
        r = self.rng
        pick = r.randrange(12)
        if pick == 0:
            return "[" * r.choice((1000, 100_000)) + "]" * r.choice((0, 1000))
        if pick == 1:
            return '{"type": "auth", "api_key": ' + "1" * r.choice((4300, 5000, 20_000)) + "}"
        if pick == 2:
            return b'{"type": "\xff\xfe\xc3\x28"}'  # invalid UTF-8
        if pick == 3:
            return "{" + '"a":' * 5000 + "1" + "}" * 5000
        if pick == 4:
            return r.choice(("", "null", "[]", "{", "}", "\"", "1", "{\"type\":", "NaN",
                             "\x00", "\u2028"))
        message = self.json_value()
        if isinstance(message, dict) and r.random() < 0.7:
            message["type"] = r.choice(MESSAGE_TYPES)
        return json.dumps(message)

    def body(self) -> tuple[bytes, str]:
        r = self.rng
        kind = r.randrange(5)
        if kind == 0:
            return b"", r.choice(CONTENT_TYPES)
        if kind == 1:
            return r.randbytes(r.randrange(1, 3000)), r.choice(CONTENT_TYPES)
        if kind == 2:  # a quarter second of quiet PCM
            return bytes(r.randrange(0, 3) for _ in range(8000)), "audio/pcm;rate=16000"
        if kind == 3:
            return b"RIFF" + r.randbytes(r.randrange(0, 200)), "audio/wav"
        return b"fLaC" + r.randbytes(r.randrange(0, 200)), "audio/flac"

    # --- HTTP -------------------------------------------------------------------------------
    async def http_request(self, http: httpx.AsyncClient) -> None:
        r = self.rng
        body, content_type = self.body()
        headers = {"Content-Type": content_type}
        if r.random() < 0.9:
            headers["X-API-Key"] = self.key
        if r.random() < 0.2:
            headers["Content-Type"] = content_type + r.choice(
                (";rate=" + "9" * r.randrange(1, 6000), ";rate=", ";channels=3", ";;;", ";x"))
        url = "/v1/transcribe?" + self.query()
        await self._judge_http(http, "POST", url, content=body, headers=headers)

    async def json_request(self, http: httpx.AsyncClient) -> None:
        r = self.rng
        payload = self.json_text()
        raw = payload if isinstance(payload, bytes) else payload.encode("utf-8", "replace")
        target = r.randrange(4)
        headers = {"Content-Type": "application/json"}
        if target == 0:
            method, url = "POST", "/v1/auth/tokens"
            headers["X-API-Key"] = self.key
        elif target == 1:
            method, url = "POST", "/v1/admin/keys"
            headers["Authorization"] = f"Bearer {self.admin}"
        elif target == 2:
            method, url = "PATCH", "/v1/admin/keys/key_0123456789abcdef"
            headers["Authorization"] = f"Bearer {self.admin}"
        else:
            method, url = "GET", "/v1/usage?" + self.query()
            headers["X-API-Key"] = self.key
        await self._judge_http(http, method, url, content=raw, headers=headers)

    async def _judge_http(self, http: httpx.AsyncClient, method: str, url: str,
                          **kw: Any) -> None:
        try:
            response = await http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.found.problem(f"{method} {url[:200]}: no answer ({type(exc).__name__}: {exc})")
            return
        self.found.http[response.status_code] += 1
        if response.status_code >= 500 and response.status_code != 503:
            self.found.problem(f"{method} {url[:200]} -> {response.status_code} "
                               f"{response.text[:200]}")
        elif response.status_code >= 400:
            with contextlib.suppress(ValueError):
                if "error" in response.json():
                    return
            self.found.problem(f"{method} {url[:200]} -> {response.status_code} not a JSON "
                               f"error: {response.text[:200]}")

    # --- WebSocket ----------------------------------------------------------------------------
    async def ws_session(self) -> None:
        r = self.rng
        path = r.choice(WS_PATHS)
        url = f"{self.ws_url}{path}?{self.query()}"
        headers = {"X-API-Key": self.key} if r.random() < 0.8 else {}
        frames: list[str | bytes | tuple[bytes]] = []
        for _ in range(r.randrange(1, 8)):
            pick = r.randrange(6)
            if pick <= 1:
                frames.append(r.choice((b"", bytes(r.randrange(1, 4000)),
                                        r.randbytes(r.randrange(1, 2000)))))
            else:
                payload = self.json_text()
                frames.append((payload,) if isinstance(payload, bytes) else payload)
        if r.random() < 0.5:
            frames.append(json.dumps({"type": "close_stream"}))
        self.found.sessions += 1
        try:
            async with asyncio.timeout(20):
                await self._run_ws(url, headers, frames)
        except TimeoutError:
            self.found.problem(f"WS {url[:200]}: no end within 20 s")

    async def _run_ws(self, url: str, headers: dict[str, str],
                      frames: list[str | bytes | tuple[bytes]]) -> None:
        try:
            ws = await websockets.connect(url, additional_headers=headers, max_size=None,
                                          open_timeout=10, close_timeout=5)
        except InvalidStatus as exc:
            status = exc.response.status_code
            self.found.http[status] += 1
            if status >= 500 and status != 503:
                self.found.problem(f"WS {url[:200]}: handshake {status}")
            return
        except (InvalidHandshake, OSError) as exc:
            self.found.problem(f"WS {url[:200]}: handshake failed {exc!r}"[:300])
            return
        try:
            with contextlib.suppress(ConnectionClosed):
                for frame in frames:
                    if isinstance(frame, tuple):
                        await ws.send(frame[0], text=True)
                    else:
                        await ws.send(frame)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(3):
                        async for _ in ws:
                            pass
        finally:
            await ws.close()
        received = ws.protocol.close_rcvd
        code = received.code if received is not None else 1006  # no close frame at all
        self.found.closes[code] += 1
        # Invalid UTF-8 in a text frame: RFC 6455 §8.1 lets the server drop the connection
        # (uvicorn sends 1007 and closes at once), so a 1006 there is no finding.
        invalid_utf8 = any(isinstance(f, tuple) for f in frames)
        if code == 1011 or (code == 1006 and not invalid_utf8):
            reason = received.reason if received is not None else ""
            self.found.problem(f"WS {url[:200]} frames={[str(f)[:40] for f in frames]}: "
                               f"closed {code} {reason}")

    # --- run ----------------------------------------------------------------------------------
    async def run(self, *, http_requests: int, json_requests: int, ws_sessions: int,
                  concurrency: int = 8) -> Findings:
        jobs = (["http"] * http_requests + ["json"] * json_requests + ["ws"] * ws_sessions)
        self.rng.shuffle(jobs)
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        for index, job in enumerate(jobs):
            queue.put_nowait((index, job))
        start = time.perf_counter()
        async with httpx.AsyncClient(base_url=self.http_url, timeout=30) as http:
            async def worker() -> None:
                while not queue.empty():
                    index, job = queue.get_nowait()
                    # One generator per job: each job draws all its input before its first
                    # await, so the inputs do not depend on how the workers interleave.
                    self.rng = random.Random(f"{self.seed}-{index}")
                    if job == "http":
                        await self.http_request(http)
                    elif job == "json":
                        await self.json_request(http)
                    else:
                        await self.ws_session()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        self.found.seconds = time.perf_counter() - start
        return self.found
