"""Relay capacity of one host with `speechgate serve --workers 1` and `--workers 2`.

The same load as bench/bench_relay.py (N real-time streams of 100 ms frames through the gateway
to a loopback Deepgram fake in echo mode, against the same clients talking to the fake
directly), with the gateways sharing one real redis-server, in one run: the no-logic relay
floor (bench/relay_floor.py), 1 worker, 2 workers, and 2 workers behind nginx. Per level it
prints the added latency (p50/p99 against direct), the CPU of the server (all its processes;
nginx's own CPU is counted for the nginx row) and the CPU per stream-second, and at the end the
largest level each held at <= 5 ms p99 added latency.

    .venv/bin/python -m bench.bench_workers --levels 50,150,300 --seconds 5

The clients and the fake run on the same host: on a machine with few cores they compete with
the workers, so read the figures as a comparison, not as the capacity of a dedicated host.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import namedtuple
from typing import Any

import psutil

from bench.bench_relay import DEV_KEY, DG_KEY, ROOT, Phase, _run, floor_process, run_phase
from tests.e2e.rollout import nginx
from tests.servers import gateway_process, redis_server

ADDED_P99_MS = 5.0
Cpu = namedtuple("Cpu", "user system")
Mem = namedtuple("Mem", "rss")


class Tree:
    """A process and its children (the workers) measured as one, like psutil.Process."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.pid = pid

    def _all(self) -> list[psutil.Process]:
        return [self.root, *self.root.children(recursive=True)]

    def cpu_times(self) -> Cpu:
        times = [p.cpu_times() for p in self._all()]
        return Cpu(sum(t.user for t in times), sum(t.system for t in times))

    def memory_info(self) -> Mem:
        return Mem(sum(p.memory_info().rss for p in self._all()))


class Trees(Tree):
    """Several process trees measured as one (nginx and the gateway behind it)."""

    def __init__(self, *pids: int) -> None:
        super().__init__(pids[0])
        self.roots = [psutil.Process(p) for p in pids]

    def _all(self) -> list[psutil.Process]:
        return [p for root in self.roots for p in (root, *root.children(recursive=True))]


async def bench(levels: list[int], seconds: float, fake_port: int,
                gateways: dict[str, tuple[int, Tree]]) -> None:
    from tests.speech import pcm

    audio = pcm("beckett.wav")
    print(f"{psutil.cpu_count()} cores; {seconds:g} s steady per phase")
    print(f"{'streams':>8} {'server':>16} {'add p50':>8} {'add p99':>8} {'cores':>6} "
          f"{'mcore/str':>9} {'results':>8} {'errors':>6}")
    held: dict[str, int] = dict.fromkeys(gateways, 0)
    for n in levels:
        direct = await run_phase(n, seconds, gateway=False, gw_port=0, fake_port=fake_port,
                                 gw_proc=next(iter(gateways.values()))[1], audio=audio)
        for name, (port, tree) in gateways.items():
            # The floor speaks the gateway's URL and events (bench/relay_floor.py).
            via: Phase = await run_phase(n, seconds, gateway=True, gw_port=port,
                                         fake_port=fake_port, gw_proc=tree,  # type: ignore[arg-type]
                                         audio=audio)
            add99 = via.pct(.99) - direct.pct(.99)
            if add99 <= ADDED_P99_MS and not via.errors:
                held[name] = max(held[name], n)
            cores = via.cpu_cores or 0
            print(f"{n:>8} {name:>16} {via.pct(.5) - direct.pct(.5):>8.2f} {add99:>8.2f} "
                  f"{cores:>6.2f} {1000 * cores / n:>9.2f} {len(via.latencies):>8} "
                  f"{via.errors:>6}", flush=True)
    for name, n in held.items():
        print(f"{name}: {n} streams held at <= {ADDED_P99_MS:g} ms p99 added")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="50,150,300")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    fake = subprocess.Popen([sys.executable, "-m", "bench.bench_relay", "--fake"],
                            stdout=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        assert fake.stdout is not None
        fake_port = int(fake.stdout.readline())
        with redis_server() as redis:
            env: dict[str, Any] = {
                "SPEECHGATE_DEV_KEY": DEV_KEY, "DEEPGRAM_API_KEY": DG_KEY,
                "SPEECHGATE_DEEPGRAM_BASE_URL": f"ws://127.0.0.1:{fake_port}",
                "SPEECHGATE_LOG_LEVEL": "warning", "SPEECHGATE_REDIS_URL": redis.url,
                "SPEECHGATE_DEFAULT_MODEL": "deepgram.nova-3"}
            with gateway_process(env={**env, "SPEECHGATE_WORKERS": "1"}) as (one, port1), \
                    gateway_process(env={**env, "SPEECHGATE_WORKERS": "2"}) as (two, port2), \
                    floor_process(fake_port) as (floor, port0), nginx([port2]) as lb:
                time.sleep(5)  # the second worker of `two` may still be starting
                servers = {"floor": (port0, Tree(floor.pid)),
                           "1 worker": (port1, Tree(one.pid)),
                           "2 workers": (port2, Tree(two.pid)),
                           "nginx+2 workers": (lb.port, Trees(two.pid, lb.process.pid))}
                _run(bench([int(x) for x in args.levels.split(",")], args.seconds, fake_port,
                           servers))
    finally:
        fake.terminate()
        fake.wait(10)


if __name__ == "__main__":
    main()
