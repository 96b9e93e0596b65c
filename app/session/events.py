"""What a session tells its front-end: the event types, and the bounded queue they travel in."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from adapters import base as ab
from adapters.base import ProviderSwitched as ProviderSwitched
from app.errors import GatewayError

OUT_QUEUE_SIZE = 256  # events buffered for a front-end before the session waits for it


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session_id: str
    model: str
    provider: str
    language: str
    sample_rate: int
    options: dict[str, str]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SessionWarning:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SessionError:
    """Fatal: the last event; the front-end closes with ``error.close_code``."""

    error: GatewayError


@dataclass(frozen=True, slots=True)
class SessionEnded:
    reason: str
    audio_seconds: float
    provider_seconds: dict[str, float]
    first_partial_ms: float | None
    final_after_end_ms: float | None


SessionEvent = (SessionCreated | ab.SpeechStarted | ab.Transcript | ab.UtteranceEnd
                | ab.Finalized | ProviderSwitched | SessionWarning | SessionError | SessionEnded
                | ab.TurnEvent)
Terminal = SessionError | SessionEnded


class EventQueue:
    """Session -> front-end, bounded: `put` waits while `size` events are undelivered (a client
    that stops reading slows its provider down instead of growing memory). The terminal event
    has its own slot, so ending a session never waits for a client; `offer` drops an advisory
    event instead of waiting."""

    def __init__(self, size: int = OUT_QUEUE_SIZE) -> None:
        self._items: deque[SessionEvent] = deque()
        self._size = size
        self._terminal: Terminal | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def put(self, event: SessionEvent) -> None:
        while len(self._items) >= self._size and self._terminal is None:
            self._writable.clear()
            await self._writable.wait()
        if self._terminal is None:
            self._items.append(event)
        self._readable.set()

    def offer(self, event: SessionEvent) -> bool:
        """Queue without waiting; False (not queued) when full."""
        if len(self._items) >= self._size or self._terminal is not None:
            return False
        self._items.append(event)
        self._readable.set()
        return True

    def end(self, event: Terminal) -> None:
        """The last event, after everything queued; later events are ignored."""
        if self._terminal is None:
            self._terminal = event
            self._readable.set()
            self._writable.set()  # a producer still waiting gives up

    def ready(self) -> bool:
        """Whether a non-terminal event is waiting."""
        return bool(self._items)

    def get_nowait(self) -> SessionEvent:
        """The next non-terminal event (call when `ready`)."""
        event = self._items.popleft()
        if len(self._items) < self._size:
            self._writable.set()
        return event

    @property
    def ended(self) -> bool:
        return self._terminal is not None

    async def get(self) -> SessionEvent:
        while True:
            if self._items:
                event = self._items.popleft()
                if len(self._items) < self._size:
                    self._writable.set()
                return event
            if self._terminal is not None:
                return self._terminal
            self._readable.clear()
            await self._readable.wait()
