"""A real three-node Redis Cluster on loopback, for the cluster tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from tests.servers import wait_for_port


def _free_cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class RedisCluster:
    ports: list[int]
    processes: list[subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"


def _cluster_ok(port: int) -> bool:
    out = subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"],
                         capture_output=True, text=True, timeout=10).stdout
    return "cluster_state:ok" in out


@contextlib.contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[RedisCluster]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed")
    directory = tempfile.mkdtemp(prefix="sg-cluster-")
    ports: list[int] = []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(nodes):
            port = _free_cluster_port()
            ports.append(port)
            processes.append(subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", directory, "--cluster-enabled", "yes",
                 "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "2000"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port, proc in zip(ports, processes, strict=True):
            wait_for_port(port, proc=proc)
        subprocess.run(["redis-cli", "--cluster", "create",
                        *[f"127.0.0.1:{p}" for p in ports], "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while not all(_cluster_ok(p) for p in ports):
            if time.monotonic() > deadline:
                raise TimeoutError("Redis Cluster did not reach cluster_state:ok in 30 s")
            threading.Event().wait(0.1)
        yield RedisCluster(ports, processes)
    finally:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(directory, ignore_errors=True)
