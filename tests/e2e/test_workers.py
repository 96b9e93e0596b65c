"""`speechgate serve --workers N`: N processes on one port sharing one Redis. One key's
concurrency limit holds whichever worker a connection lands on; with the in-memory store more
than one worker is refused with the reason and the fix; SIGTERM drains every worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import psutil
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from app.workers import worker_settings
from config import load_settings
from tests.auth.e2e_client import ADMIN_TOKEN, create_key, finish, open_stream
from tests.e2e.rollout import SERVE, GatewayProc
from tests.servers import ROOT, RedisServer

DB = 9


def listening_workers(gateway: GatewayProc, expect: int, within: float = 90) -> set[int]:
    """The worker pids listening on the gateway's port, once `expect` of them are."""
    deadline = time.monotonic() + within
    while True:
        parent = psutil.Process(gateway.process.pid)  # type: ignore[union-attr]
        pids = set()
        for child in parent.children():
            with contextlib.suppress(psutil.Error):
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == gateway.port
                       for c in child.net_connections(kind="tcp")):
                    pids.add(int(child.pid))
        if len(pids) >= expect:
            return pids
        assert time.monotonic() < deadline, f"{len(pids)} of {expect} workers listening"
        time.sleep(0.1)


def _owner(gateway: GatewayProc, local_port: int) -> int:
    """The pid of the worker holding the server side of our connection from `local_port`."""
    parent = psutil.Process(gateway.process.pid)  # type: ignore[union-attr]
    for child in parent.children():
        for conn in child.net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == local_port and conn.laddr.port == gateway.port:
                return int(child.pid)
    raise AssertionError(f"no worker holds the connection from port {local_port}")


async def _scrape(gateway: GatewayProc) -> str:
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http:
        # A new connection each time, so the kernel may pick either worker.
        response = await http.get("/metrics", headers={"Connection": "close"})
    response.raise_for_status()
    return response.text


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in /metrics:\n{text[:3000]}")


async def _refused_on(gateway: GatewayProc, secret: str) -> tuple[int, int, dict[str, Any]]:
    """Connect without a key, see which worker took the connection, then authenticate by
    message: returns (worker pid, close code, error event)."""
    query = urlencode({"output_format": "verbose_json"})
    ws = await websockets.connect(f"{gateway.ws_url}/v1/transcribe?{query}")
    pid = await asyncio.to_thread(_owner, gateway, ws.local_address[1])
    await ws.send(json.dumps({"type": "auth", "api_key": secret}))
    error: dict[str, Any] = {}
    try:
        async with asyncio.timeout(15):
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "error":
                    error = message
    except ConnectionClosed:
        pass
    return pid, ws.close_code or 1006, error


async def test_limits_hold_across_workers(redis: RedisServer) -> None:
    url = f"redis://127.0.0.1:{redis.port}/{DB}"
    env = {"SPEECHGATE_REDIS_URL": url, "SPEECHGATE_ADMIN_TOKEN": ADMIN_TOKEN,
           "SPEECHGATE_LOG_LEVEL": "warning", "SPEECHGATE_DRAIN_SECONDS": "3",
           "SPEECHGATE_AUTH_TIMEOUT": "10"}
    gateway = GatewayProc(env, args=("--workers", "2"))
    gateway.start()
    try:
        workers = await asyncio.to_thread(listening_workers, gateway, 2)
        assert len(workers) == 2
        _, secret = await create_key(gateway.http_url, max_concurrent_streams=1)
        held = await open_stream(gateway.ws_url, secret)
        holder = await asyncio.to_thread(_owner, gateway, held.local_address[1])
        refused_by: set[int] = set()
        for _ in range(40):  # the kernel spreads connections; try until both workers refused
            pid, code, error = await _refused_on(gateway, secret)
            assert (code, error.get("code")) == (4429, "too_many_streams"), (code, error)
            refused_by.add(pid)
            if refused_by == workers:
                break
        assert refused_by == workers, "every attempt landed on one worker"
        assert holder in workers
        # /metrics, whichever worker answers, reports the whole process tree: one open stream,
        # and the refusals of both workers.
        for _ in range(6):
            text = await _scrape(gateway)
            assert _value(text, 'speechgate_active_sessions{model="local.tiny.en",'
                                'provider="local"}') == 1
            assert _value(text, 'speechgate_admission_refusals_total{reason="rate_limited"}') \
                >= len(workers)
        await finish(held)
        # The slot is free again, for whichever worker.
        await finish(await open_stream(gateway.ws_url, secret))
        # SIGTERM: the supervisor passes it on, every worker drains and exits.
        assert gateway.terminate(30) == -signal.SIGTERM
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                       for p in workers)
    finally:
        gateway.stop()


def test_more_than_one_worker_needs_redis() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SPEECHGATE_REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-c", SERVE, "--workers", "2", "--port", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "SPEECHGATE_REDIS_URL" in done.stderr and "in-memory" in done.stderr


def test_the_decode_pool_is_shared_out_between_workers() -> None:
    settings = load_settings(local_decode_workers=4, local_cpu_threads=2)
    assert worker_settings(settings, 1, cores=8).local_decode_workers == 4
    assert worker_settings(settings, 2, cores=8).local_decode_workers == 2
    assert worker_settings(settings, 8, cores=8).local_decode_workers == 1
    assert worker_settings(settings, 4, cores=16).local_decode_workers == 2


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPEECHGATE_WORKERS", raising=False)
