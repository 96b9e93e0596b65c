"""A real gateway process (``python -m app``) whose every output line is kept for the tests
to read: the log-redaction test greps it for secrets, the fuzz test for tracebacks."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.servers import ROOT, LocalUrls, free_port, stop_process, wait_for_port


@dataclass
class LoggedGateway(LocalUrls):
    port: int
    dev_key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    final_log: str | None = None  # kept once the process has stopped

    def log(self) -> str:
        """Everything the process wrote so far (stdout and stderr, interleaved)."""
        if self.final_log is not None:
            return self.final_log
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)


@contextlib.contextmanager
def logged_gateway(env: dict[str, str] | None = None) -> Iterator[LoggedGateway]:
    """``python -m app`` on a free port: local engine, in-memory keys, a dev key; stdout and
    stderr both go to one file. Stopped with SIGTERM (a clean shutdown) on exit."""
    port = free_port()
    dev_key = "sg_dev_" + secrets.token_urlsafe(24)
    full_env = {**os.environ, "SPEECHGATE_HOST": "127.0.0.1", "SPEECHGATE_PORT": str(port),
                "SPEECHGATE_DEV_KEY": dev_key, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("SPEECHGATE_REDIS_URL", None)
    with tempfile.TemporaryDirectory(prefix="sg-log-") as directory:
        log_path = Path(directory) / "gateway.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=full_env,
                                    stdout=out, stderr=subprocess.STDOUT)
        gateway = LoggedGateway(port, dev_key, proc, log_path)
        try:
            wait_for_port(port, timeout=90, proc=proc)
            yield gateway
        finally:
            stop_process(proc)
            gateway.final_log = gateway.log()
