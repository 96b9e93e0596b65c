"""The fuzz run of tests/security/test_fuzz.py, longer: throughput and the server's memory.

Starts a real gateway process (``python -m app``: local engine, in-memory keys), runs the
seeded fuzzer (random batch requests, WebSocket sessions with random frames, random JSON
bodies) and prints requests and sessions per second, the gateway's peak RSS (sampled every
10 ms with psutil), what the answers were, and any finding (HTTP 500, close 1011/1006,
traceback or ERROR line in the server log).

    .venv/bin/python -m bench.bench_fuzz [--http 6000] [--json 1500] [--ws 900] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import threading
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.security.fuzz import Fuzzer  # noqa: E402
from tests.security.servers import logged_gateway  # noqa: E402

MiB = 1024 * 1024


def sample_peak(pid: int, stop: threading.Event, peak: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.wait(0.01):
        try:
            peak[0] = max(peak[0], process.memory_info().rss)
        except psutil.Error:
            return


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, default=6000)
    parser.add_argument("--json", type=int, default=1500)
    parser.add_argument("--ws", type=int, default=900)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args()
    admin = "adm-" + secrets.token_urlsafe(16)
    env = {"SPEECHGATE_ADMIN_TOKEN": admin, "SPEECHGATE_IDLE_TIMEOUT": "3",
           "SPEECHGATE_AUTH_TIMEOUT": "1", "SPEECHGATE_FAILED_AUTH_PER_MINUTE": "0"}
    with logged_gateway(env) as gw:
        start_rss = gw.rss()
        peak = [start_rss]
        stop = threading.Event()
        sampler = threading.Thread(target=sample_peak, args=(gw.process.pid, stop, peak),
                                   daemon=True)
        sampler.start()
        try:
            fuzzer = Fuzzer(gw.http_url, gw.ws_url, gw.dev_key, admin, args.seed)
            found = await fuzzer.run(http_requests=args.http, json_requests=args.json,
                                     ws_sessions=args.ws, concurrency=args.concurrency)
        finally:
            stop.set()
            sampler.join()
        end_rss = gw.rss()
    log = gw.log()
    bad_lines = [line for line in log.splitlines() if "Traceback" in line or " ERROR " in line]
    answers = sum(found.http.values())
    print(f"fuzz seed {args.seed}, concurrency {args.concurrency}: {answers} HTTP answers and "
          f"{found.sessions} WebSocket sessions in {found.seconds:.1f} s")
    print(f"  {(args.http + args.json) / found.seconds:,.0f} HTTP requests/s, "
          f"{found.sessions / found.seconds:,.1f} WebSocket sessions/s, "
          f"{(args.http + args.json + found.sessions) / found.seconds:,.0f} inputs/s")
    print(f"  gateway RSS: {start_rss / MiB:.0f} MiB at start, peak {peak[0] / MiB:.0f} MiB, "
          f"{end_rss / MiB:.0f} MiB at the end")
    print(f"  HTTP statuses {dict(sorted(found.http.items()))}")
    print(f"  close codes {dict(sorted(found.closes.items()))}")
    print(f"  findings: {len(found.problems)} answers, {len(bad_lines)} ERROR/traceback lines")
    for problem in found.problems[:10]:
        print(f"    {problem[:200]}")


if __name__ == "__main__":
    asyncio.run(main())
