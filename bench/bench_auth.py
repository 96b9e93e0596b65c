"""Cost of authentication and limits per new session: authenticate + admit + release.

Runs against a real redis-server on loopback (started here) and, for reference, the in-memory
backend. Prints p50/p99 latency of one session's checks (sequential) and how many admissions
per second one process sustains with concurrent sessions.

    .venv/bin/python -m bench.bench_auth [--sessions 2000] [--seconds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auth import GatewayAccessControl, MemoryBackend  # noqa: E402
from auth.backend import Backend  # noqa: E402
from auth.redis_store import RedisBackend  # noqa: E402
from tests.servers import redis_server  # noqa: E402

MODEL = "local.tiny.en"
# Every limit is set (and generous), so each admission runs every check.
LIMITS = {"max_concurrent_streams": 100_000, "sessions_per_minute": 10_000_000,
          "audio_seconds_per_day": 1e12, "audio_seconds_per_month": 1e12,
          "allowed_models": ["local.*"]}


async def one_session(access: GatewayAccessControl, secret: str) -> None:
    principal = await access.authenticate(secret, client="127.0.0.1")
    admission = await access.admit(principal, MODEL)
    await admission.release()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(name: str, backend: Backend, sessions: int, seconds: float,
                  concurrency: int) -> None:
    access = GatewayAccessControl(backend, failed_auth_per_minute=20)
    await access.start()
    try:
        _, secret = await access.store.create("bench", **LIMITS)
        for _ in range(50):  # warm up connections and script caches
            await one_session(access, secret)
        connect, release, total = [], [], []
        cpu_started = time.process_time()
        for _ in range(sessions):
            started = time.perf_counter()
            principal = await access.authenticate(secret, client="127.0.0.1")
            admission = await access.admit(principal, MODEL)
            admitted = time.perf_counter()
            await admission.release()
            ended = time.perf_counter()
            connect.append((admitted - started) * 1000)
            release.append((ended - admitted) * 1000)
            total.append((ended - started) * 1000)
        cpu_ms = (time.process_time() - cpu_started) * 1000 / sessions

        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await one_session(access, secret)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rate = done / (time.perf_counter() - started)
        print(f"{name} — sequential, n={sessions}, {cpu_ms:.3f} ms CPU per session")
        for label, values in (("authenticate+admit (connect)", connect), ("release", release),
                              ("authenticate+admit+release", total)):
            print(f"  {label:<30} p50 {statistics.median(values):.3f} ms   "
                  f"p99 {percentile(values, 0.99):.3f} ms   max {max(values):.3f} ms")
        print(f"  throughput, {concurrency} concurrent sessions for {seconds:g} s: "
              f"{rate:,.0f} admissions/s (each with its release)")
    finally:
        await access.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with redis_server() as server:
        await measure("redis (loopback)", RedisBackend(server.url), args.sessions, args.seconds,
                      args.concurrency)
    await measure("in-memory", MemoryBackend(), args.sessions, args.seconds, args.concurrency)


if __name__ == "__main__":
    asyncio.run(main())
