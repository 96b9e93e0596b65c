"""Prometheus metrics, one registry per app (so tests can run several apps in one process).

With ``speechgate serve --workers N`` every worker writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (set by `app.workers`) and ``/metrics``, whichever worker answers,
reports the sum over all of them (prometheus_client's multiprocess mode), so one scrape sees
the whole pod: the HPA scales on ``speechgate_active_sessions`` per pod.

Labels carry only model and provider ids, close codes and reason codes: never a key, a token
or a session id.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from app.session import Session

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
# Close codes that are an admission refusal (the key, its limits or its quota said no).
ADMISSION_CODES = {4401: "unauthorized", 4402: "quota_exceeded", 4403: "forbidden",
                   4429: "rate_limited"}
# Close codes that blame the upstream provider.
UPSTREAM_CODES = {4502, 4503, 4504}


def _provider(model: str) -> str:
    return model.partition(".")[0] or "unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        r = self.registry
        self.sessions = Counter("speechgate_sessions", "Sessions opened",
                                ["provider", "model"], registry=r)
        gauge_kw: dict[str, Any] = {"multiprocess_mode": "livesum"} if self.multiprocess else {}
        self.active = Gauge("speechgate_active_sessions", "Sessions (streams) open now",
                            ["provider", "model"], registry=r, **gauge_kw)
        self.audio = Counter("speechgate_audio_seconds", "Audio received, seconds",
                             ["provider", "model"], registry=r)
        self.first_partial = Histogram(
            "speechgate_first_result_seconds", "From first audio to first result",
            ["provider"], buckets=LATENCY_BUCKETS, registry=r)
        self.final_latency = Histogram(
            "speechgate_final_after_end_seconds",
            "From the end of the audio (close_stream) to the last final", ["provider"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.closes = Counter("speechgate_session_errors", "Sessions ended by an error",
                              ["code"], registry=r)
        self.upstream_errors = Counter(
            "speechgate_upstream_errors", "Sessions ended by an upstream provider failure",
            ["code"], registry=r)
        self.refusals = Counter("speechgate_admission_refusals",
                                "Sessions refused by admission (key, limits, quota)",
                                ["reason"], registry=r)
        self.draining = Gauge("speechgate_draining", "1 while this process drains for shutdown",
                              registry=r, **gauge_kw)
        self.drain_remaining = Gauge(
            "speechgate_drain_sessions_remaining",
            "Sessions still delivering their finals during a drain", registry=r, **gauge_kw)
        self._open: dict[int, tuple[str, str]] = {}

    # --- hooks called by the session core and the front-ends --------------------------------

    def session_opened(self, session: Session) -> None:
        model = str(session.request.model)
        labels = (_provider(model), model)
        self._open[id(session)] = labels
        self.sessions.labels(*labels).inc()
        self.active.labels(*labels).inc()

    def session_closed(self, session: Session) -> None:
        provider, model = self._open.pop(id(session), (_provider(session.model_id),
                                                      session.model_id))
        self.active.labels(provider, model).dec()
        self.audio.labels(_provider(session.model_id), session.model_id).inc(
            session.audio_seconds)
        first_ms = session.first_result_ms
        if first_ms is not None:
            self.first_partial.labels(provider).observe(first_ms / 1000)
        final_ms = session.final_after_end_ms
        if final_ms is not None:
            self.final_latency.labels(provider).observe(final_ms / 1000)

    def session_error(self, close_code: int, code: str | None = None) -> None:
        """A session (or its admission) ended with `close_code`; `code` is the error's machine
        code when the caller has it (e.g. ``too_many_streams`` for a 4429)."""
        self.closes.labels(str(close_code)).inc()
        if close_code in ADMISSION_CODES:
            self.refusals.labels(code or ADMISSION_CODES[close_code]).inc()
        elif close_code in UPSTREAM_CODES:
            self.upstream_errors.labels(str(close_code)).inc()

    def active_total(self) -> float:
        """Sessions open now in this process, over every provider and model."""
        return sum(sample.value for metric in self.active.collect()
                   for sample in metric.samples)

    def drain_started(self, sessions: int) -> None:
        self.draining.set(1)
        self.drain_remaining.set(sessions)

    def drain_progress(self, remaining: int) -> None:
        self.drain_remaining.set(remaining)

    # --- exposition -------------------------------------------------------------------------

    def render(self) -> bytes:
        if self.multiprocess:
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)


def worker_exited(pid: int) -> None:
    """Multiprocess mode: forget a dead worker's live gauges (its sessions are gone)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
