"""Gateway processes a test can restart on the same port, like a rolling deploy does.

`Gateway.restart()` sends SIGTERM (the gateway drains: finals of the audio received, then 1012),
waits for the process to exit, and starts a new one on the same port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import IO

from tests.servers import ROOT, free_port, wait_for_port

SERVE = "import sys; from app.cli import main; raise SystemExit(main(['serve', *sys.argv[1:]]))"


@dataclass
class GatewayProc:
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] = field(default_factory=lambda: tempfile.TemporaryFile())  # noqa: SIM115
    starts: int = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        env = {**os.environ, "SPEECHGATE_HOST": "127.0.0.1", "SPEECHGATE_PORT": str(self.port),
               "SPEECHGATE_WORKERS": "1",
               **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, *self.args],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        self.starts += 1
        if wait:
            wait_for_port(self.port, timeout=90, proc=self.process)

    def terminate(self, within: float = 30.0) -> int:
        """SIGTERM and wait for the exit (the drain is bounded by SPEECHGATE_DRAIN_SECONDS)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(within)

    def kill(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def restart(self) -> None:
        self.terminate()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]
