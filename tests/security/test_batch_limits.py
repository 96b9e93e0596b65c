"""``POST /v1/transcribe`` admits before it reads and bounds what it decodes.

A real gateway process (local engine, in-memory keys, ``max_batch_seconds`` = 120) is sent a
decompression bomb — 4 h of silence in 2.2 MB of FLAC — by keys in different states. The
process's RSS is sampled (psutil) while each request runs; the figures are printed.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import psutil
import pytest

from app.audio import wav_bytes
from tests.security.flac_bomb import silent_flac
from tests.security.servers import LoggedGateway, logged_gateway
from tests.speech import pcm as speech_pcm

pytestmark = pytest.mark.timeout(300)

ADMIN = "adm-" + secrets.token_urlsafe(16)
CAP_SECONDS = 120
MiB = 1024 * 1024
SPEECH = speech_pcm("beckett.wav")[: 16000 * 2 * 3]  # 3 s


@pytest.fixture(scope="module")
def gw() -> Iterator[LoggedGateway]:
    with logged_gateway({"SPEECHGATE_ADMIN_TOKEN": ADMIN,
                         "SPEECHGATE_MAX_BATCH_SECONDS": str(CAP_SECONDS)}) as gateway:
        # Warm up (PyAV imported, the engine's first session) so that what is measured below
        # is the cost of each request, whatever order the tests run in.
        warm = httpx.post(f"{gateway.http_url}/v1/transcribe", content=wav_bytes(SPEECH, 16000),
                          headers={"X-API-Key": gateway.dev_key}, timeout=60)
        assert warm.status_code == 200, warm.text
        yield gateway


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return silent_flac(4 * 3600)


@pytest.fixture(scope="module")
def hidden_bomb() -> bytes:
    """The same, with "length unknown" in STREAMINFO: only decoding finds out."""
    return silent_flac(4 * 3600, declare_length=False)


class RssPeak:
    """Samples a process's RSS every 5 ms in a thread, from `start()` to `stop()`."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


@dataclass
class Measured:
    response: httpx.Response
    seconds: float
    rss_growth: int


async def post(gw: LoggedGateway, key: str, body: bytes, content_type: str = "audio/flac",
               label: str = "") -> Measured:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=120) as http:
        with RssPeak(gw.process.pid) as rss:
            start = time.perf_counter()
            response = await http.post("/v1/transcribe?output_format=json", content=body,
                                       headers={"X-API-Key": key,
                                                "Content-Type": content_type})
            elapsed = time.perf_counter() - start
    print(f"\n{label}: HTTP {response.status_code} in {elapsed * 1000:.0f} ms, "
          f"server RSS +{rss.growth / MiB:.1f} MiB (peak {rss.peak / MiB:.0f} MiB)")
    return Measured(response, elapsed, rss.growth)


async def new_key(gw: LoggedGateway, **limits: float) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        created = await http.post("/v1/admin/keys", json={"name": "batch", **limits},
                                  headers={"Authorization": f"Bearer {ADMIN}"})
    assert created.status_code == 201, created.text
    return created.json()["secret"], created.json()["key"]["id"]


async def used_seconds(gw: LoggedGateway, key: str) -> float:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        usage = (await http.get("/v1/usage", headers={"X-API-Key": key})).json()
    return float(sum(day["audio_seconds"] for day in usage["days"]))


def error(measured: Measured) -> str:
    return str(measured.response.json()["error"]["message"])


async def test_bomb_from_a_key_with_no_quota_left_is_refused_402_before_reading(
        gw: LoggedGateway, bomb: bytes) -> None:
    key, _ = await new_key(gw, audio_seconds_per_day=3, max_concurrent_streams=1)
    spend = await post(gw, key, wav_bytes(SPEECH, 16000), "audio/wav", "3 s of speech")
    assert spend.response.status_code == 200, spend.response.text
    assert spend.response.json()["text"]

    refused = await post(gw, key, bomb, label="bomb, quota used up")
    assert refused.response.status_code == 402
    assert "quota" in error(refused)
    assert refused.rss_growth < 50 * MiB


def _answer_before_body(port: int, key: str) -> bytes:
    """Announce 100 MB, send 10 bytes, and wait for the answer (the body never comes)."""
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(b"POST /v1/transcribe HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode()
                     + b"\r\nContent-Type: audio/flac\r\nContent-Length: 100000000\r\n\r\n"
                     + b"fLaC" + bytes(6))
        sock.settimeout(10)
        return sock.recv(65536)


async def test_refusals_come_before_the_body_is_read(gw: LoggedGateway) -> None:
    """The answer arrives while the client has sent 10 of the 100 MB it announced: the key,
    its quota and its concurrency were judged before a byte of the body was needed."""
    used_up, _ = await new_key(gw, audio_seconds_per_day=1)
    spend = await post(gw, used_up, SPEECH[:32000], "audio/pcm;rate=16000", "1 s PCM")
    assert spend.response.status_code == 200, spend.response.text  # the quota, used up
    answer = await asyncio.to_thread(_answer_before_body, gw.port, used_up)
    assert answer.startswith(b"HTTP/1.1 402 "), answer[:200]
    answer = await asyncio.to_thread(_answer_before_body, gw.port, "sg_live_" + "x" * 43)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]

    one_stream, _ = await new_key(gw, max_concurrent_streams=1)
    holder = asyncio.create_task(asyncio.to_thread(_hang_up_mid_upload, gw.port, one_stream,
                                                   "audio/flac", b"fLaC"))
    await asyncio.sleep(0.2)  # the first upload holds the key's one stream
    answer = await asyncio.to_thread(_answer_before_body, gw.port, one_stream)
    await holder
    assert answer.startswith(b"HTTP/1.1 429 "), answer[:200]


async def test_bomb_over_the_cap_is_refused_413_from_its_declared_length(
        gw: LoggedGateway, bomb: bytes) -> None:
    key, _ = await new_key(gw, max_concurrent_streams=1)
    for attempt in range(2):  # the second proves the first freed its concurrency slot
        refused = await post(gw, key, bomb, label=f"bomb over the cap #{attempt + 1}")
        assert refused.response.status_code == 413
        assert "max_batch_seconds=120" in error(refused) and "declares" in error(refused)
        assert refused.rss_growth < 50 * MiB
    ok = await post(gw, key, wav_bytes(SPEECH, 16000), "audio/wav", "speech after")
    assert ok.response.status_code == 200, ok.response.text

    # Within the cap but over what the key has left: 402 (the cap is checked first).
    little_left, _ = await new_key(gw, audio_seconds_per_day=60)
    refused = await post(gw, little_left, silent_flac(100), label="100 s, 60 s of quota left")
    assert refused.response.status_code == 402 and "60 s left" in error(refused)
    assert refused.rss_growth < 50 * MiB


async def test_bomb_of_undeclared_length_stops_decoding_at_the_cap_and_the_quota(
        gw: LoggedGateway, hidden_bomb: bytes) -> None:
    key, _ = await new_key(gw, max_concurrent_streams=1)
    refused = await post(gw, key, hidden_bomb, label="hidden bomb, cap 120 s")
    assert refused.response.status_code == 413
    assert "decoded so far" in error(refused)
    assert refused.rss_growth < 50 * MiB
    assert await used_seconds(gw, key) <= CAP_SECONDS

    # Declared a little over the cap (within the 10 % trusted to estimates): decoded, and
    # stopped at the exact bound.
    slightly_over = await post(gw, key, silent_flac(CAP_SECONDS + 5), label="125 s, cap 120 s")
    assert slightly_over.response.status_code == 413
    assert "decoded so far" in error(slightly_over)

    quota_key, _ = await new_key(gw, audio_seconds_per_day=30)
    refused = await post(gw, quota_key, hidden_bomb, label="hidden bomb, 30 s of quota")
    assert refused.response.status_code == 402 and "30 s left" in error(refused)
    assert refused.rss_growth < 50 * MiB
    used = await used_seconds(gw, quota_key)
    assert 0 < used <= 30, used  # what was decoded within the quota was transcribed
    again = await post(gw, quota_key, wav_bytes(SPEECH, 16000), "audio/wav", "after")
    assert again.response.status_code == 402


async def test_pcm_over_the_remaining_quota_is_refused_402(gw: LoggedGateway) -> None:
    key, _ = await new_key(gw, audio_seconds_per_day=20)
    minutes = bytes(16000 * 2 * 100)  # under the cap, over the quota
    # Its Content-Length says 100 s: refused before any work, nothing charged.
    announced = await post(gw, key, minutes, "audio/pcm;rate=16000", "100 s PCM, 20 s left")
    assert announced.response.status_code == 402, announced.response.text
    assert "announces 100 s" in error(announced)
    assert await used_seconds(gw, key) == 0

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: only counting tells
        for i in range(0, len(minutes), 64_000):
            yield minutes[i:i + 64_000]

    for attempt in range(2):
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=60) as http:
            with RssPeak(gw.process.pid) as rss:
                response = await http.post(
                    "/v1/transcribe", content=chunked(),
                    headers={"X-API-Key": key, "Content-Type": "audio/pcm;rate=16000"})
        print(f"\n100 s chunked PCM, 20 s left #{attempt + 1}: HTTP {response.status_code}, "
              f"RSS +{rss.growth / MiB:.1f} MiB")
        assert response.status_code == 402, response.text
        assert rss.growth < 50 * MiB
    assert 0 < await used_seconds(gw, key) <= 20  # what was sent within the quota


@pytest.mark.parametrize("content_type, parameter", [
    ("audio/pcm;rate=" + "9" * 5000, "rate"),
    ("audio/pcm;rate=abc", "rate"),
    ("audio/pcm;rate=100", "rate"),
    ("audio/pcm;rate=-16000", "rate"),
    ("audio/pcm; rate", "rate"),
    ("audio/l16;rate=16000;channels=2", "channels"),
    ("audio/pcm;rate=16000;encoding=f32le", "encoding"),
    ("audio/raw;bogus=1", "bogus"),
])
async def test_bad_content_type_parameters_are_400_naming_them(
        gw: LoggedGateway, content_type: str, parameter: str) -> None:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        response = await http.post("/v1/transcribe", content=SPEECH,
                                   headers={"X-API-Key": gw.dev_key,
                                            "Content-Type": content_type})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert f"parameter {parameter}" in message and len(message) < 200


def _hang_up_mid_upload(port: int, key: str, content_type: str, head: bytes,
                        length: int = 3_000_000) -> None:
    """Announce `length` bytes (for PCM, 94 s: within the limits), send `head`, hang up."""
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(b"POST /v1/transcribe HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode()
                     + b"\r\nContent-Type: " + content_type.encode()
                     + f"\r\nContent-Length: {length}\r\n\r\n".encode() + head)
        time.sleep(0.5)


async def test_client_hanging_up_mid_upload_is_not_an_error(gw: LoggedGateway,
                                                            bomb: bytes) -> None:
    key, _ = await new_key(gw, max_concurrent_streams=1)
    before = gw.log()
    await asyncio.to_thread(_hang_up_mid_upload, gw.port, key, "audio/pcm;rate=16000", SPEECH)
    await asyncio.to_thread(_hang_up_mid_upload, gw.port, key, "audio/flac", bomb[:100_000])
    # The slot is freed: a new request of the same key (one stream at most) is served.
    deadline = time.monotonic() + 15
    while True:
        ok = await post(gw, key, wav_bytes(SPEECH, 16000), "audio/wav", "after hang-ups")
        if ok.response.status_code != 429 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert ok.response.status_code == 200, ok.response.text
    new_lines = gw.log()[len(before):]
    assert "went away" in new_lines  # logged, at info
    assert " ERROR " not in new_lines and "Traceback" not in new_lines, new_lines
