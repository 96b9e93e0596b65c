"""What bounds a session besides its client: idle timeout, maximum length, usage metering and
the key's quota. `watch` runs them in one task and ends the session through a callback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.errors import GatewayError
from app.session.events import SessionWarning
from auth.base import Admission

logger = logging.getLogger(__name__)

USAGE_INTERVAL = 5.0  # seconds between usage writes (API.md §4 asks for at most 10)


@dataclass
class Limits:
    """Idle and length limits (monotonic clock)."""

    idle_timeout: float
    max_seconds: float
    started: float
    last_activity: float

    @classmethod
    def starting_now(cls, idle_timeout: float, max_seconds: float) -> Limits:
        now = time.monotonic()
        return cls(idle_timeout, max_seconds, now, now)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def breach(self, now: float, *, input_open: bool) -> GatewayError | None:
        """The limit the session has gone past at `now`, if any."""
        if input_open and now - self.last_activity > self.idle_timeout:
            return GatewayError(
                4408, f"idle timeout: no audio or keepalive for {self.idle_timeout:g} s")
        if now - self.started > self.max_seconds:
            return GatewayError(
                4413, f"session longer than max_session_seconds={self.max_seconds:g}")
        return None


class Meter:
    """Writes the audio a session received to its key's usage, as deltas."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.metered_seconds = 0.0

    async def record(self, audio_seconds: float, model_id: str) -> None:
        delta = audio_seconds - self.metered_seconds
        if delta <= 0:
            return
        self.metered_seconds += delta
        try:
            await self.admission.record_usage(delta, model_id)
        except Exception:  # noqa: BLE001 - metering must not kill a session
            logger.warning("usage not recorded", exc_info=True)

    def quota_error(self) -> GatewayError | None:
        if self.admission.exhausted:
            return GatewayError(4402, "audio quota exhausted for this key", code="quota_exceeded")
        return None


async def watch(limits: Limits, meter: Meter, *, usage: Callable[[], tuple[float, str]],
                input_open: Callable[[], bool], warn: Callable[[SessionWarning], None],
                end: Callable[[GatewayError], Awaitable[None]]) -> None:
    """Check the limits twice a second (or faster for short idle timeouts), meter usage every
    `USAGE_INTERVAL`; the first limit hit or an exhausted quota calls `end` and returns."""
    next_meter = time.monotonic() + USAGE_INTERVAL
    while True:
        await asyncio.sleep(min(0.5, limits.idle_timeout / 4))
        now = time.monotonic()
        if now >= next_meter:
            next_meter = now + USAGE_INTERVAL
            await meter.record(*usage())
            for code, message in meter.admission.warnings():
                warn(SessionWarning(code, message))
            error = meter.quota_error()
            if error is not None:
                await end(error)
                return
        error = limits.breach(now, input_open=input_open())
        if error is not None:
            await end(error)
            return
