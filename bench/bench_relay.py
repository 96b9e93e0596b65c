"""Gateway overhead on the relay path: N real-time streams (100 ms frames) through the gateway to
a loopback Deepgram fake, against the same N clients talking to the fake directly.

Three processes: the gateway (``python -m app``, measured with psutil), the fake (echo mode:
one interim result per audio frame whose text is the byte count received), and this one
(the clients). Per level it runs the gateway phase, then the direct phase, each for
``--seconds`` of steady state, and prints the added latency per result (p50/p99 of gateway
minus direct), the gateway's CPU (cores) and RSS per stream.

    .venv/bin/python bench/bench_relay.py --levels 1,100,500 --seconds 20
    .venv/bin/python bench/bench_relay.py --floor ...   # the same, through bench/relay_floor.py

``--floor`` puts a relay with no gateway logic (same uvicorn + websockets stack) in the
gateway's place: the part of the figures that is this machine and this stack, not Speechgate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from tests.servers import free_port, gateway_process, wait_for_port  # noqa: E402

FRAME_BYTES = 3200  # 100 ms of 16 kHz s16le
FRAME_SECONDS = 0.1
DG_KEY = "dg-bench-key"
DEV_KEY = "sg_bench_" + os.urandom(6).hex()


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_cores: float | None = None
    rss_per_stream_kib: float | None = None
    client_cores: float = 0.0  # this process (the benchmark's clients)
    fake_cores: float = 0.0

    def pct(self, q: float) -> float:
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] * 1000 if data else float("nan")


def gateway_index(raw: str | bytes) -> int | None:
    message = json.loads(raw)
    if message.get("type") == "transcript" and str(message.get("text", "")).startswith("b"):
        return int(message["text"][1:])
    return None


def direct_index(raw: str | bytes) -> int | None:
    message = json.loads(raw)
    if message.get("type") == "Results":
        text = message["channel"]["alternatives"][0]["transcript"]
        return int(text[1:]) if text.startswith("b") else None
    return None


async def client(url: str, headers: dict[str, str], parse: Callable[[str | bytes], int | None],
                 end_message: str, phase: Phase, window: tuple[float, float], stop: float,
                 audio: bytes) -> None:
    sent: dict[int, float] = {}  # bytes sent so far -> when the frame completing them left
    try:
        async with connect(url, additional_headers=headers, max_size=None, compression=None,
                           open_timeout=30) as ws:
            async def reader() -> None:
                async for raw in ws:
                    now = time.perf_counter()
                    index = parse(raw)
                    at = sent.pop(index, None) if index is not None else None
                    if at is not None and window[0] <= at <= window[1]:
                        phase.latencies.append(now - at)

            task = asyncio.create_task(reader())
            await asyncio.sleep(random.uniform(0, FRAME_SECONDS))  # spread the frame phases
            total, next_at = 0, time.perf_counter()
            while next_at < stop:
                frame = audio[total % (len(audio) - FRAME_BYTES):][:FRAME_BYTES]
                total += len(frame)
                sent[total] = time.perf_counter()
                await ws.send(frame)
                next_at += FRAME_SECONDS
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            await ws.send(end_message)
            async with asyncio.timeout(15):
                await task
    except Exception:  # noqa: BLE001 - counted, the run goes on
        phase.errors += 1


async def run_phase(n: int, seconds: float, *, gateway: bool, gw_port: int, fake_port: int,
                    gw_proc: psutil.Process, audio: bytes) -> Phase:
    phase = Phase()
    if gateway:
        url = (f"ws://127.0.0.1:{gw_port}/v1/transcribe?model=deepgram.nova-3"
               "&output_format=verbose_json&interim_results=true")
        headers, parse, end = {"Authorization": f"Bearer {DEV_KEY}"}, gateway_index, json.dumps(
            {"type": "close_stream"})
    else:
        url = (f"ws://127.0.0.1:{fake_port}/v1/listen?model=nova-3&encoding=linear16"
               "&sample_rate=16000&interim_results=true")
        headers, parse, end = {"Authorization": f"Token {DG_KEY}"}, direct_index, json.dumps(
            {"type": "CloseStream"})
    rss_idle = gw_proc.memory_info().rss
    others = [psutil.Process(), *(p for p in psutil.Process().children() if "--fake" in
                                  " ".join(p.cmdline()))]
    ramp = min(10.0, 1.0 + n * 0.01)  # connect at up to ~100 streams per second
    start = time.perf_counter()
    window = (start + ramp + 2.0, start + ramp + 2.0 + seconds)
    stop = window[1] + 0.5
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.create_task(client(url, headers, parse, end, phase, window, stop,
                                                audio)))
        await asyncio.sleep(ramp / n)
    await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
    cpu0, t0 = gw_proc.cpu_times(), time.perf_counter()
    other0 = [sum(p.cpu_times()[:2]) for p in others]
    await asyncio.sleep(seconds / 2)
    rss_busy = gw_proc.memory_info().rss
    await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
    cpu1, t1 = gw_proc.cpu_times(), time.perf_counter()
    phase.client_cores, phase.fake_cores = (
        (sum(p.cpu_times()[:2]) - c0) / (t1 - t0) for p, c0 in zip(others, other0, strict=True))
    await asyncio.gather(*tasks)
    if gateway:
        phase.cpu_cores = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (t1 - t0)
        phase.rss_per_stream_kib = (rss_busy - rss_idle) / n / 1024
    return phase


def serve_fake(port: int) -> None:
    """The fake's own process: the Deepgram fake in echo mode, forever."""
    from tests.fakes.deepgram import FakeDeepgram

    async def main() -> None:
        fake = FakeDeepgram(api_key=DG_KEY, echo=True)
        fake.sessions = _Forgetful()
        async with fake:
            print(fake.port, flush=True)
            await asyncio.Event().wait()

    _run(main())


class _Forgetful(list[Any]):
    """A session log that keeps nothing (hours of benchmark traffic)."""

    def append(self, item: Any) -> None:
        pass


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


async def bench(levels: list[int], seconds: float, fake_port: int, gw_port: int,
                gw: psutil.Process) -> None:
    from tests.speech import pcm

    audio = pcm("beckett.wav")
    print(f"gateway pid {gw.pid}, idle RSS {gw.memory_info().rss / 2**20:.1f} MiB; "
          f"{psutil.cpu_count()} cores; {seconds:g} s steady per phase")
    print(f"{'streams':>8} {'gw p50':>8} {'gw p99':>8} {'dir p50':>8} {'dir p99':>8} "
          f"{'add p50':>8} {'add p99':>8} {'cores':>6} {'KiB/str':>8} {'results':>8} "
          f"{'errors':>6} {'cli/fake cores (gw | direct phase)':>34}")
    for n in levels:
        via = await run_phase(n, seconds, gateway=True, gw_port=gw_port, fake_port=fake_port,
                              gw_proc=gw, audio=audio)
        direct = await run_phase(n, seconds, gateway=False, gw_port=gw_port,
                                 fake_port=fake_port, gw_proc=gw, audio=audio)
        print(f"{n:>8} {via.pct(.5):>8.2f} {via.pct(.99):>8.2f} {direct.pct(.5):>8.2f} "
              f"{direct.pct(.99):>8.2f} {via.pct(.5) - direct.pct(.5):>8.2f} "
              f"{via.pct(.99) - direct.pct(.99):>8.2f} {via.cpu_cores or 0:>6.2f} "
              f"{via.rss_per_stream_kib or 0:>8.1f} {len(via.latencies):>8} "
              f"{via.errors + direct.errors:>6} {via.client_cores:>8.2f} {via.fake_cores:.2f} | "
              f"{direct.client_cores:.2f} {direct.fake_cores:.2f}", flush=True)


@contextlib.contextmanager
def floor_process(fake_port: int) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.relay_floor:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"], cwd=ROOT,
        env={**os.environ, "UPSTREAM": f"ws://127.0.0.1:{fake_port}"})
    try:
        wait_for_port(port, timeout=30, proc=proc)
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,100,500")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--floor", action="store_true",
                        help="measure bench/relay_floor.py (no gateway logic) instead")
    parser.add_argument("--fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake:
        serve_fake(0)
        return
    fake = subprocess.Popen([sys.executable, __file__, "--fake"], stdout=subprocess.PIPE,
                            cwd=ROOT, text=True)
    try:
        assert fake.stdout is not None
        fake_port = int(fake.stdout.readline())  # printed once it listens
        env = {"SPEECHGATE_DEV_KEY": DEV_KEY, "DEEPGRAM_API_KEY": DG_KEY,
               "SPEECHGATE_DEEPGRAM_BASE_URL": f"ws://127.0.0.1:{fake_port}",
               "SPEECHGATE_LOG_LEVEL": "warning"}
        server = floor_process(fake_port) if args.floor else gateway_process(env=env)
        with server as (proc, gw_port):
            print("relay floor (bench/relay_floor.py), not the gateway" if args.floor
                  else "gateway (python -m app)")
            _run(bench([int(x) for x in args.levels.split(",")], args.seconds, fake_port,
                       gw_port, psutil.Process(proc.pid)))
    finally:
        fake.terminate()
        fake.wait(10)


if __name__ == "__main__":
    main()
