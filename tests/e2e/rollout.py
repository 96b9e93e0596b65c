"""Gateway processes a test can restart on the same port, like a rolling deploy does.

`GatewayProc.restart()` sends SIGTERM (the gateway drains: finals of the audio received, then 1012),
waits for the process to exit, and starts a new one on the same port. `nginx()` runs Debian's
nginx in front of several of them.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from tests.servers import ROOT, LocalUrls, free_port, stop_process, wait_for_port

SERVE = "import sys; from app.cli import main; raise SystemExit(main(['serve', *sys.argv[1:]]))"


@dataclass
class GatewayProc(LocalUrls):
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] = field(default_factory=lambda: tempfile.TemporaryFile())  # noqa: SIM115
    starts: int = 0

    def start(self, wait: bool = True) -> None:
        env = {**os.environ, "SPEECHGATE_HOST": "127.0.0.1", "SPEECHGATE_PORT": str(self.port),
               "SPEECHGATE_WORKERS": "1",
               **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, *self.args],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        self.starts += 1
        if wait:
            self.start_wait()

    def start_wait(self) -> None:
        assert self.process is not None
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
        if self.process is not None:
            stop_process(self.process)
        self.log.close()

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]


NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  upstream speechgate {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://speechgate;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_connect_timeout 2s;
      proxy_read_timeout 120s;
      proxy_send_timeout 120s;
      # A backend that is restarting refuses the connection: try the next one.
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 3;
    }}
  }}
}}
"""


@dataclass
class Nginx(LocalUrls):
    port: int
    process: subprocess.Popen[bytes]
    directory: str

    def log(self) -> str:
        with open(f"{self.directory}/error.log", errors="replace") as f:
            return f.read()[-6000:]


@contextlib.contextmanager
def nginx(backends: list[int]) -> Iterator[Nginx]:
    """Debian's nginx in the foreground, balancing WebSockets over `backends` (loopback ports),
    with its config, pid, logs and temp files in a temporary directory."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(exe):
        raise RuntimeError("nginx is not installed: run `make test` (it installs it)")
    directory = tempfile.mkdtemp(prefix="sg-nginx-")
    port = free_port()
    # max_fails=0: a refused connection (a gateway restarting) only sends this request on to
    # the next gateway; it never marks the gateway down for the others.
    servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=0;"
                        for p in backends)
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    conf = f"{directory}/nginx.conf"
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(user=user, dir=directory, servers=servers, port=port))
    process = subprocess.Popen([exe, "-p", directory, "-c", conf, "-e",
                                f"{directory}/error.log"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Nginx(port, process, directory)
    try:
        wait_for_port(port, timeout=30, proc=process)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # graceful stop
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(directory, ignore_errors=True)
