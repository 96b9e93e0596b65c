"""Prometheus metrics, one registry per app (so tests can run several apps in one process)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from app.session import Session


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions = Counter("speechgate_sessions", "Sessions opened", ["model"],
                                registry=self.registry)
        self.active = Gauge("speechgate_active_sessions", "Sessions open now",
                            registry=self.registry)
        self.audio = Counter("speechgate_audio_seconds", "Audio received, seconds", ["model"],
                             registry=self.registry)
        self.first_partial = Histogram(
            "speechgate_first_result_seconds", "From first audio to first result",
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10), registry=self.registry)
        self.closes = Counter("speechgate_session_errors", "Sessions ended by an error",
                              ["code"], registry=self.registry)

    def session_opened(self, session: Session) -> None:
        self.sessions.labels(session.request.model).inc()
        self.active.inc()

    def session_closed(self, session: Session) -> None:
        self.active.dec()
        self.audio.labels(session.model_id).inc(session.audio_seconds)
        if session.first_result_ms is not None:
            self.first_partial.observe(session.first_result_ms / 1000)

    def session_error(self, close_code: int) -> None:
        self.closes.labels(str(close_code)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
