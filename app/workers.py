"""`speechgate serve --workers N`: N gateway processes on one port, one per core.

Each worker is a whole gateway — its own event loop, local engine, provider connections and
drain on SIGTERM — listening on the same address with ``SO_REUSEPORT``, so the kernel spreads
new connections across them. Keys, limits and usage are shared through Redis; with the
in-memory store each worker would have its own keys and limits, so more than one worker is
refused (`WorkersRefused`).

The parent only supervises: SIGTERM/SIGINT is passed to every worker (each drains: finals of
the audio it received, then 1012) and the parent exits once they all have; a worker that dies
on its own is replaced (a few times, then the parent gives up and stops the rest).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
from multiprocessing.process import BaseProcess
from types import FrameType

from app.metrics import MULTIPROC_ENV, worker_exited
from config import Settings

logger = logging.getLogger("speechgate.workers")

MAX_RESPAWNS = 5  # unexpected worker deaths tolerated before the parent gives up


class WorkersRefused(ValueError):
    """The requested number of workers cannot be honoured; the message says why and what to do."""


def host_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_workers(requested: int | None, settings: Settings) -> int:
    """The number of worker processes: `requested`, or the host's cores when a Redis URL is set
    (1 otherwise). Raises `WorkersRefused` for a count that cannot work."""
    if requested is None:
        return host_cores() if settings.redis_url else 1
    if requested < 1:
        raise WorkersRefused(f"--workers must be at least 1, got {requested}")
    if requested > 1 and not settings.redis_url:
        raise WorkersRefused(
            f"--workers {requested} needs a shared key store: with the in-memory store each "
            "worker would hold its own keys, limits and usage. Set SPEECHGATE_REDIS_URL "
            "(e.g. redis://localhost:6379/0) or run one worker.")
    return requested


def worker_settings(settings: Settings, workers: int, cores: int | None = None) -> Settings:
    """One worker's settings: its share of the host's cores for local decoding.

    Each worker runs `local_decode_workers` decodes of `local_cpu_threads` threads; with
    several workers that would multiply, so each gets at most ``cores / (workers x threads)``
    decodes (at least one), never more than configured.
    """
    if workers <= 1:
        return settings
    cores = cores or host_cores()
    share = max(1, cores // (workers * max(1, settings.local_cpu_threads)))
    return settings.model_copy(
        update={"local_decode_workers": min(settings.local_decode_workers, share)})


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker if the supervisor dies (kill -9, OOM), so no orphan keeps
    serving; its leases then expire like any crashed process's."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _worker(settings: Settings, index: int, parent: int) -> None:
    """One worker process: a complete gateway on its own SO_REUSEPORT socket."""
    _die_with_parent()
    if os.getppid() != parent:  # the supervisor died before we could ask
        return

    from app.logs import configure_logging
    from app.main import GatewayServer, build_app
    from app.server import build_config

    configure_logging(settings)  # the same redacting setup as one process (app/logs.py)
    logging.getLogger("speechgate.workers").info("worker %d started (pid %d)", index,
                                                 os.getpid())
    sock = _listen(settings.host, settings.port)
    app, gateway = build_app(settings)
    config = build_config(app, settings, log_config=None)
    try:
        GatewayServer(config, gateway).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the signal after its clean shutdown
        pass


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = worker_settings(settings, workers)
        self.count = workers
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = []
        self.stop_signal: int | None = None
        self.respawns = 0

    def _spawn(self, index: int) -> BaseProcess:
        process = self.context.Process(target=_worker, args=(self.settings, index, os.getpid()),
                                       name=f"speechgate-worker-{index}", daemon=False)
        process.start()
        return process

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = sig
            self._forward(signal.SIGTERM)  # every worker drains
        elif sig == signal.SIGINT:
            self._forward(signal.SIGINT)  # a second Ctrl-C: uvicorn's force exit

    def _forward(self, sig: int) -> None:
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, sig)

    def run(self) -> int:
        # Fail here, once, if the port is taken by something that is not us.
        _listen(self.settings.host, self.settings.port).close()
        # /metrics on any worker reports all of them (prometheus_client multiprocess mode).
        metrics_dir = tempfile.mkdtemp(prefix="speechgate-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
        try:
            return self._run()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.processes = [self._spawn(i) for i in range(self.count)]
        if self.stop_signal is not None:  # a signal came while we were starting them
            self._forward(signal.SIGTERM)
        logger.info("%d workers on %s:%d (decode pool %d per worker)", self.count,
                    self.settings.host, self.settings.port, self.settings.local_decode_workers)
        while True:
            alive = [p for p in self.processes if p.exitcode is None]
            if self.stop_signal is not None and not alive:
                break
            if self.stop_signal is None:
                for index, process in enumerate(self.processes):
                    if process.exitcode is None:
                        continue
                    self.respawns += 1
                    if self.respawns > MAX_RESPAWNS:
                        logger.error("workers keep dying (last exit code %s): stopping",
                                     process.exitcode)
                        self.stop_signal = signal.SIGTERM
                        self._forward(signal.SIGTERM)
                        break
                    logger.warning("worker %d exited with %s: starting a new one", index,
                                   process.exitcode)
                    if process.pid is not None:
                        worker_exited(process.pid)
                    self.processes[index] = self._spawn(index)
            # Until a worker exits (its sentinel), or 0.2 s for a signal to be looked at.
            multiprocessing.connection.wait([p.sentinel for p in self.processes], timeout=0.2)
        for process in self.processes:
            process.join(5)
        if self.respawns > MAX_RESPAWNS:
            return 1
        return 0


def serve_workers(settings: Settings, workers: int) -> int:
    """Run `workers` gateway processes on ``settings.host:settings.port`` until a signal."""
    if settings.port == 0:
        print("error: --workers needs a fixed --port (each worker listens on it)",
              file=sys.stderr)
        return 2
    supervisor = Supervisor(settings, workers)
    code = supervisor.run()
    if supervisor.stop_signal == signal.SIGTERM and code == 0:
        # Exit the way a single server does: by the signal, after a clean shutdown.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
    return code
