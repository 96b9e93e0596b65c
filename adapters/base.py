"""The adapter contract: what every speech-to-text provider looks like to the gateway.

A provider module (``adapters/<provider>.py``) defines one ``<Provider>Adapter`` subclass of
`Adapter`, whose `open_stream` returns a `SttStream`. The session core only ever talks to these
two classes and the frozen event dataclasses below; provider JSON never leaves the provider
module (pure ``parse_*`` functions turn it into events).

Audio handed to a stream is always 16-bit little-endian mono PCM at ``StreamOptions.sample_rate``
(the gateway resamples client audio to `Capabilities.input_sample_rate` first). Times in events
are seconds from the start of the audio this stream received; the session core shifts them into
session time.

Errors: a provider failure leaves an adapter only as a `ProviderError` subclass. `SttStream`
wraps the provider's own code in `_guard`, which maps transport exceptions by type
(`adapters.errors.TRANSPORT_ERRORS`); any other exception is a bug: it is logged with its
traceback and propagates unchanged (the gateway closes 1011, not retryable, no fallback).

The option types (``adapters/options.py``) and the error tree (``adapters/errors.py``) live in
their own modules and are re-exported here: a provider module imports the contract from
``adapters.base`` alone.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, TypeVar

from adapters._tasks import cancel_and_wait
from adapters.errors import ModelNotFound as ModelNotFound
from adapters.errors import ProviderAuthError as ProviderAuthError
from adapters.errors import ProviderBadRequest as ProviderBadRequest
from adapters.errors import ProviderConnectionLost as ProviderConnectionLost
from adapters.errors import ProviderError as ProviderError
from adapters.errors import ProviderNotConfigured as ProviderNotConfigured
from adapters.errors import ProviderProtocolError as ProviderProtocolError
from adapters.errors import ProviderRateLimited as ProviderRateLimited
from adapters.errors import ProviderTimeout as ProviderTimeout
from adapters.errors import ProviderUnavailable as ProviderUnavailable
from adapters.errors import http_status_error as http_status_error
from adapters.errors import map_transport_exception as map_transport_exception
from adapters.errors import parse_retry_after as parse_retry_after
from adapters.errors import provider_message as provider_message
from adapters.options import CANONICAL_SAMPLE_RATE as CANONICAL_SAMPLE_RATE
from adapters.options import Capabilities as Capabilities
from adapters.options import ModelInfo as ModelInfo
from adapters.options import OptionStatus as OptionStatus
from adapters.options import StreamOptions as StreamOptions
from adapters.options import check_options as check_options
from config.settings import LocalEngineSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

BYTES_PER_SAMPLE = 2


# --------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float | None = None
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    time: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """A partial (``is_final=False``) or final transcript of one segment.

    Partials of a segment share its ``segment_id`` with the final that replaces them; a
    final is emitted exactly once per ``segment_id``.
    """

    segment_id: str
    is_final: bool
    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()
    confidence: float | None = None
    language: str | None = None
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    time: float


@dataclass(frozen=True, slots=True)
class Finalized:
    """Acknowledges `SttStream.finalize`; comes after the finals that the finalize produced."""


@dataclass(frozen=True, slots=True)
class ProviderUsage:
    """Audio the provider says it processed (seconds), when it reports it."""

    audio_seconds: float


@dataclass(frozen=True, slots=True)
class ProviderWarning:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """A turn-taking signal for voice agents (Deepgram Flux): ``eager_end_of_turn`` (the
    speaker has probably finished: a reply can be prepared) or ``turn_resumed`` (they went on:
    drop it). ``confidence`` is the provider's end-of-turn confidence."""

    event: str
    turn_index: int
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class ProviderSwitched:
    """A `FallbackStream` (``adapters/fallback.py``) moved to its next model.

    ``replayed_seconds`` of audio since the last final were sent again to the new model;
    ``lost_seconds`` of audio since the last final could not be (older than the replay
    buffer holds). Events after this one come from the new model, already in session time.
    """

    from_model: str
    to_model: str
    reason: str
    replayed_seconds: float
    lost_seconds: float = 0.0


StreamEvent = (SpeechStarted | Transcript | UtteranceEnd | Finalized | ProviderUsage
               | ProviderWarning | TurnEvent | ProviderSwitched)


# ------------------------------------------------------------------------------- streams

_END = object()


def event_of(item: object) -> StreamEvent | None:
    """What an item of a stream's event queue (`SttStream._events`) means: the event; None
    for the end of the stream; raises the error that ended it."""
    if item is _END:
        return None
    if isinstance(item, Exception):
        raise item
    return item  # type: ignore[return-value]


class SttStream(ABC):
    """One live transcription stream. Async context manager; `aclose` is idempotent.

    Call order: `send_audio`* with `finalize` any time, then `close_stream` once; iterate
    `events()` (from one task) until it ends, which it does after the stream has flushed
    everything following `close_stream`, after `aclose`, or by raising a `ProviderError`.

    Subclasses implement `_start`, `_send_audio`, `_finalize`, `_close_stream`, `_shutdown`
    and push results with `_emit`; when the upstream has nothing more to say they call
    `_finish()` (or `_fail(err)`). The base class owns the event queue, error wrapping and
    the bounded waits.
    """

    provider: str = ""

    def __init__(self, model: str, options: StreamOptions, *, queue_size: int = 256) -> None:
        self.model = model
        self.options = options
        self._events: asyncio.Queue[object] = asyncio.Queue(maxsize=queue_size)
        self._closed = False
        self._ended = False
        self._input_closed = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- public API (called by the session core) --------------------------------------

    async def start(self) -> None:
        """Open the upstream; raises a `ProviderError` if it cannot."""
        await self._guard(self._start())

    async def send_audio(self, pcm: bytes) -> None:
        """Forward PCM (s16le mono at ``options.sample_rate``); awaits when upstream is slow."""
        if self._input_closed or self._closed:
            raise ProviderProtocolError("audio after end of stream", provider=self.provider)
        try:  # `_guard`, inlined: this is the relay's hot path
            await self._send_audio(pcm)
        except Exception as exc:  # noqa: BLE001 - this is the mapping boundary
            self._raise_mapped(exc)

    async def finalize(self) -> None:
        """Turn everything sent so far into finals, then emit `Finalized`."""
        await self._guard(self._finalize())

    async def close_stream(self) -> None:
        """No more audio: flush the upstream; `events()` ends once it has answered."""
        if self._input_closed:
            return
        self._input_closed = True
        await self._guard(self._close_stream())

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Normalized events until the stream ends; raises the `ProviderError` that ended it."""
        while True:
            event = event_of(await self._events.get())
            if event is None:
                return
            yield event

    async def aclose(self) -> None:
        """Close the upstream now (idempotent); `events()` ends."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._shutdown()
        except Exception:  # noqa: BLE001 - closing must never raise
            logger.debug("%s shutdown failed", self.provider, exc_info=True)
        finally:  # also when the caller is cancelled mid-close: no task is left behind
            try:
                await cancel_and_wait(list(self._tasks))
            finally:
                self._finish()

    async def __aenter__(self) -> SttStream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- for subclasses -----------------------------------------------------------------

    @abstractmethod
    async def _start(self) -> None: ...

    @abstractmethod
    async def _send_audio(self, pcm: bytes) -> None: ...

    @abstractmethod
    async def _finalize(self) -> None: ...

    @abstractmethod
    async def _close_stream(self) -> None: ...

    @abstractmethod
    async def _shutdown(self) -> None:
        """Release the upstream (close sockets, cancel work); must not raise."""

    async def _emit(self, event: StreamEvent) -> None:
        """Queue `event` for `events()`; awaits while the consumer is behind (the one bounded
        path every event takes: a slow consumer slows the upstream reader, nothing piles up)."""
        if not self._ended:
            await self._events.put(event)

    def _finish(self) -> None:
        """The stream is over; `events()` ends after what was already emitted."""
        if not self._ended:
            self._ended = True
            self._put_terminal(_END)

    def _fail(self, error: Exception) -> None:
        """End the stream with an error raised from `events()` (a `ProviderError`, or an
        unmapped exception: a bug, which the gateway reports as internal)."""
        if not self._ended:
            self._ended = True
            self._put_terminal(error)
            self._put_terminal(_END)

    def _put_terminal(self, item: object) -> None:
        try:
            self._events.put_nowait(item)
        except asyncio.QueueFull:
            # The consumer is behind; deliver the terminal item once there is room.
            task = asyncio.get_running_loop().create_task(self._events.put(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        """Run a background task (e.g. the upstream reader); errors end the stream."""

        async def runner() -> None:
            try:
                await self._guard(coro)
            except Exception as err:  # noqa: BLE001 - ends the stream, raised from events()
                self._fail(err)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            # A task cancelled before its first step never awaited `coro`: close it, so it
            # is not reported as "never awaited".
            if inspect.iscoroutine(coro):
                coro.close()

        task = asyncio.get_running_loop().create_task(runner(), name=f"{self.provider}:{name}")
        self._tasks.add(task)
        task.add_done_callback(done)
        return task

    async def _guard(self, coro: Awaitable[T]) -> T:
        """Await `coro`, mapping any non-`ProviderError` exception to one."""
        try:
            return await coro
        except Exception as exc:  # noqa: BLE001 - this is the mapping boundary
            self._raise_mapped(exc)

    def _raise_mapped(self, exc: Exception) -> NoReturn:
        """Raise what `exc` (caught at the mapping boundary) means: a `ProviderError` as it
        is, a transport exception as its `ProviderError`, anything else as itself, logged
        with its traceback (a bug, not a provider failure). Cancellation is never caught."""
        if isinstance(exc, ProviderError):
            raise exc
        mapped = self._map_exception(exc)
        if mapped is None:
            logger.error("%s adapter: unexpected %s (a bug, not a provider failure)",
                         self.provider, type(exc).__name__, exc_info=exc)
            raise exc
        raise mapped from exc

    def _map_exception(self, exc: Exception) -> ProviderError | None:
        """The `ProviderError` a transport exception means; None for anything else (a bug).
        Providers may refine this."""
        return map_transport_exception(exc, self.provider)


async def put_while_alive(queue: asyncio.Queue[T], item: T, worker: asyncio.Task[Any]) -> bool:
    """Put `item` on a bounded `queue` that `worker` drains, waiting while it is full; False
    (item not queued) as soon as the worker has ended, so no caller waits on a dead worker."""
    if worker.done():
        return False
    if not queue.full():
        queue.put_nowait(item)
        return True
    put = asyncio.ensure_future(queue.put(item))
    try:
        await asyncio.wait({put, worker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not put.done():
            put.cancel()
    return put.done() and not put.cancelled()


# ------------------------------------------------------------------------------ adapters


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What an adapter gets from the gateway: only its own settings, never the whole config."""

    api_key: str | None = None
    base_url: str | None = None
    connect_timeout: float = 10.0
    # Seconds without progress (no message from the provider) before a flush or finalize
    # fails; also the bound of each REST request of the segmented providers.
    flush_timeout: float = 10.0
    # Seconds a streaming provider may answer nothing at all (no message, no pong) before it
    # is declared stalled; None: the provider's own window (`WebSocketStream.stall_window`).
    stall_timeout: float | None = None
    # The local engine's settings (`LocalAdapter` only; None: the defaults).
    local: LocalEngineSettings | None = None
    # Seconds of silence before a KeepAlive (`DeepgramAdapter`; None: the provider's default).
    keepalive_interval: float | None = None
    # Seconds a short utterance may wait to share an upload (`GroqAdapter`; 0: never).
    merge_wait: float = 0.0


class Adapter(ABC):
    """A provider: its model catalogue and a factory for streams."""

    provider: str = ""
    # Name of the variable to set when unconfigured (shown in 4503 reasons and /v1/models).
    credential_env: str | None = None
    # model name -> (display name, capabilities); the default `models()` lists these.
    catalogue: ClassVar[dict[str, tuple[str, Capabilities]]] = {}

    def __init__(self, context: AdapterContext) -> None:
        self.context = context

    def models(self) -> list[ModelInfo]:
        """Every model this provider offers, with `available` set."""
        reason = self.unavailable_reason()
        return [ModelInfo(f"{self.provider}.{name}", self.provider, name, title, caps,
                          available=reason is None, unavailable_reason=reason)
                for name, (title, caps) in self.catalogue.items()]

    def unavailable_reason(self) -> str | None:
        """Why no stream can be opened right now (None when configured)."""
        if self.credential_env and not self.context.api_key:
            return f"{self.provider} is not configured: set {self.credential_env}"
        return None

    def capabilities(self, model: str) -> Capabilities:
        for info in self.models():
            if info.model == model:
                return info.capabilities
        raise ModelNotFound(f"unknown model {self.provider}.{model}", provider=self.provider)

    @abstractmethod
    def open_stream(self, model: str, options: StreamOptions) -> SttStream:
        """A new, not yet started stream (start it with ``async with`` or `SttStream.start`)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release shared resources (HTTP pools, models) at shutdown."""


AdapterFactory = Callable[[AdapterContext], Adapter]
