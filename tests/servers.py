"""Real servers for tests and benchmarks: a uvicorn-served gateway and redis-server.

Everything listens on 127.0.0.1 on a free port and is stopped on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0,
                  proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        threading.Event().wait(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class LocalUrls:
    """`ws_url` and `http_url` of a server listening on 127.0.0.1:`port`."""

    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def stop_process(proc: subprocess.Popen[bytes], within: float = 20) -> None:
    """SIGTERM (a clean shutdown) and wait `within` s for the exit; then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(within)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    directory: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.process, 10)

    def restart(self) -> None:
        """Stop and start again on the same port (data is not persisted)."""
        self.stop()
        self.process = _spawn_redis(self.port, self.directory)
        wait_for_port(self.port, proc=self.process)


def _spawn_redis(port: int, directory: str, *extra: str) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed: run `make test` (it installs it)")
    return subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def redis_server(*extra: str) -> Iterator[RedisServer]:
    directory = tempfile.mkdtemp(prefix="sg-redis-")
    port = free_port()
    server = RedisServer(port, _spawn_redis(port, directory, *extra), directory)
    try:
        wait_for_port(port, proc=server.process)
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Gateway(LocalUrls):
    """A gateway served by a real uvicorn server in a background thread (on 127.0.0.1)."""

    host: str
    port: int
    dev_key: str
    app: Any


@contextlib.contextmanager
def running_gateway(**overrides: Any) -> Iterator[Gateway]:
    """Serve `app.main.build_app(settings)` with the gateway's uvicorn server on a free port.

    Keyword arguments override settings (e.g. ``idle_timeout=1.0``, ``redis_url=...``).
    """
    from app.main import build_app
    from app.server import GatewayServer, build_config
    from config import load_settings

    port = free_port()
    dev_key = str(overrides.pop("dev_key", "sg_test_" + os.urandom(8).hex()))
    settings = load_settings(host="127.0.0.1", port=port, dev_key=dev_key, **overrides)
    app, state = build_app(settings)
    config = build_config(app, settings, log_level="warning", lifespan="on")
    server = GatewayServer(config, state)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("gateway failed to start (see log above)")
            if time.monotonic() > deadline:
                raise TimeoutError("gateway did not start within 60 s")
            threading.Event().wait(0.02)
        yield Gateway("127.0.0.1", port, dev_key, app)
    finally:
        server.should_exit = True
        thread.join(30)


async def sessions_gone(gateway: Gateway, within: float = 15.0) -> None:
    """Wait (bounded) until the gateway served in this process holds no session."""
    state = gateway.app.state.gateway
    async with asyncio.timeout(within):
        while state.sessions:  # noqa: ASYNC110 - the sessions live in the server's thread
            await asyncio.sleep(0.02)


@contextlib.contextmanager
def gateway_process(env: dict[str, str] | None = None,
                    port: int | None = None) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run ``python -m app`` as a separate process (for multi-process and crash tests)."""
    port = port or free_port()
    # One process unless the test asks for workers (with Redis the default is one per core).
    full_env = {**os.environ, "SPEECHGATE_HOST": "127.0.0.1", "SPEECHGATE_PORT": str(port),
                "SPEECHGATE_WORKERS": "1", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout=90, proc=proc)
        yield proc, port
    finally:
        stop_process(proc)
        if proc.stderr:
            proc.stderr.close()


async def active_sessions(http_url: str) -> float:
    """``speechgate_active_sessions`` of a gateway (any process), summed over its labels."""
    import httpx

    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{http_url}/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("speechgate_active_sessions"))
