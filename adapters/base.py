"""The adapter contract: what every speech-to-text provider looks like to the gateway.

A provider module (``adapters/<provider>.py``) defines one ``<Provider>Adapter`` subclass of
`Adapter`, whose `open_stream` returns a `SttStream`. The session core only ever talks to these
two classes and the frozen event dataclasses below; provider JSON never leaves the provider
module (pure ``parse_*`` functions turn it into events).

Audio handed to a stream is always 16-bit little-endian mono PCM at ``StreamOptions.sample_rate``
(the gateway resamples client audio to `Capabilities.input_sample_rate` first). Times in events
are seconds from the start of the audio this stream received; the session core shifts them into
session time.

Errors: nothing but a `ProviderError` subclass may escape an adapter. `SttStream` wraps the
provider's own code in `_guard` so a stray transport or SDK exception becomes a
`ProviderProtocolError` rather than a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

CANONICAL_SAMPLE_RATE = 16_000
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


StreamEvent = (SpeechStarted | Transcript | UtteranceEnd | Finalized | ProviderUsage
               | ProviderWarning)


# --------------------------------------------------------------------------- capabilities

OptionStatus = Literal["applied", "ignored", "downgraded"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a model can honour; checked before connecting (see `check_options`)."""

    streaming: bool = True  # native streaming (False: segmented batch, e.g. Groq)
    interim_results: bool = True
    word_timestamps: bool = True
    diarization: bool = False
    custom_vocabulary: bool = False
    language_detection: bool = False
    initial_prompt: bool = False
    temperature: bool = False
    punctuation: bool = True
    # ISO 639-1 codes; empty = any language the provider takes.
    languages: tuple[str, ...] = ()
    # The PCM rate the adapter wants; the session core resamples to it.
    input_sample_rate: int = CANONICAL_SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One entry of the ``GET /v1/models`` catalogue."""

    id: str  # "provider.model"
    provider: str
    model: str
    display_name: str
    capabilities: Capabilities
    available: bool = True
    unavailable_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        caps = self.capabilities
        return {
            "id": self.id,
            "provider": self.provider,
            "display_name": self.display_name,
            "streamable": caps.streaming,
            "available": self.available,
            "unavailable_reason": self.unavailable_reason,
            "languages": list(caps.languages) or ["*"],
            "diarization": caps.diarization,
            "custom_vocabulary": caps.custom_vocabulary,
            "word_timestamps": caps.word_timestamps,
            "language_detection": caps.language_detection,
            "interim_results": caps.interim_results,
            "sample_rates": [8000, 16000, 22050, 24000, 32000, 44100, 48000],
        }


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Normalized session options (shared/API.md §1.2), after `check_options`."""

    language: str = "en"  # ISO 639-1 or "auto"
    punctuation: bool = True
    diarization: bool = False
    speakers_expected: int | None = None
    temperature: float | None = None
    initial_prompt: str | None = None
    custom_vocabulary: tuple[str, ...] = ()
    interim_results: bool = True
    sample_rate: int = CANONICAL_SAMPLE_RATE  # rate of the PCM handed to send_audio


def check_options(
    caps: Capabilities, options: StreamOptions
) -> tuple[StreamOptions, dict[str, OptionStatus], list[str]]:
    """Match requested options against a model's capabilities.

    Returns the options the adapter should use, a status per option the client set, and
    human-readable warnings for everything not applied as asked. Nothing is dropped silently.
    """
    status: dict[str, OptionStatus] = {}
    warnings: list[str] = []
    opts = options

    def unsupported(name: str, why: str, kind: OptionStatus = "ignored") -> None:
        status[name] = kind
        warnings.append(f"{name} {kind}: {why}")

    if options.language == "auto":
        if caps.language_detection:
            status["language"] = "applied"
        else:
            fallback = caps.languages[0] if caps.languages else "en"
            opts = _replace(opts, language=fallback)
            unsupported("language", f"model has no language detection; using {fallback!r}",
                        "downgraded")
    elif caps.languages and options.language not in caps.languages:
        # A model that cannot take the language is a client error, raised by the caller.
        status["language"] = "ignored"
        warnings.append(f"language {options.language!r} not offered by this model")
    else:
        status["language"] = "applied"

    if options.diarization:
        if caps.diarization:
            status["diarization"] = "applied"
            if options.speakers_expected is not None:
                status["speakers_expected"] = "applied"
        else:
            opts = _replace(opts, diarization=False, speakers_expected=None)
            unsupported("diarization", "model has no speaker labels")
            if options.speakers_expected is not None:
                unsupported("speakers_expected", "needs diarization")
    elif options.speakers_expected is not None:
        opts = _replace(opts, speakers_expected=None)
        unsupported("speakers_expected", "only used with diarization=true")

    if options.custom_vocabulary:
        if caps.custom_vocabulary:
            status["custom_vocabulary"] = "applied"
        elif caps.initial_prompt:
            status["custom_vocabulary"] = "downgraded"
            warnings.append("custom_vocabulary downgraded: passed to the model as a prompt")
        else:
            opts = _replace(opts, custom_vocabulary=())
            unsupported("custom_vocabulary", "model takes no vocabulary")
    if options.initial_prompt is not None:
        if caps.initial_prompt:
            status["initial_prompt"] = "applied"
        else:
            opts = _replace(opts, initial_prompt=None)
            unsupported("initial_prompt", "model takes no prompt")
    if options.temperature is not None:
        if caps.temperature:
            status["temperature"] = "applied"
        else:
            opts = _replace(opts, temperature=None)
            unsupported("temperature", "model takes no temperature")
    if not options.punctuation:
        if caps.punctuation:
            status["punctuation"] = "applied"
        else:
            unsupported("punctuation", "model always punctuates")
    if options.interim_results:
        if caps.interim_results:
            status["interim_results"] = "applied"
        else:
            opts = _replace(opts, interim_results=False)
            unsupported("interim_results", "model returns finals only")
    return opts, status, warnings


def _replace(options: StreamOptions, **changes: Any) -> StreamOptions:
    import dataclasses

    return dataclasses.replace(options, **changes)


# ------------------------------------------------------------------------------- errors


class ProviderError(Exception):
    """Base of every error an adapter raises. Mapped to a close code in ``app/errors.py``."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        code: str | int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"{self.provider} " if self.provider else ""
        code = f" [{self.code}]" if self.code is not None else ""
        return f"{where}{self.message}{code}"


class ModelNotFound(ProviderError):
    """The provider or model does not exist (4404)."""


class ProviderNotConfigured(ProviderError):
    """No credentials or model files for this provider on this gateway (4503)."""


class ProviderUnavailable(ProviderError):
    """Upstream unreachable or overloaded (4503); usually retryable."""


class ProviderAuthError(ProviderError):
    """Upstream rejected the gateway's credentials (4502)."""


class ProviderRateLimited(ProviderError):
    """Upstream said 429 / too many sessions (4429)."""


class ProviderTimeout(ProviderError):
    """Upstream did not answer within a bounded wait (4504)."""


class ProviderProtocolError(ProviderError):
    """Upstream failed, closed with an error, or sent something we cannot use (4502)."""


class ProviderBadRequest(ProviderError):
    """Upstream rejected a parameter the client chose (4400)."""


# ------------------------------------------------------------------------------- streams

_END = object()


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
        self._sink: Callable[[StreamEvent], None] | None = None
        self.audio_seconds_sent = 0.0

    # ---- public API (called by the session core) --------------------------------------

    async def start(self) -> None:
        """Open the upstream; raises a `ProviderError` if it cannot."""
        await self._guard(self._start())

    async def send_audio(self, pcm: bytes) -> None:
        """Forward PCM (s16le mono at ``options.sample_rate``); awaits when upstream is slow."""
        if self._input_closed or self._closed:
            raise ProviderProtocolError("audio after end of stream", provider=self.provider)
        self.audio_seconds_sent += len(pcm) / (BYTES_PER_SAMPLE * self.options.sample_rate)
        await self._guard(self._send_audio(pcm))

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
            item = await self._events.get()
            if item is _END:
                return
            if isinstance(item, ProviderError):
                raise item
            yield item  # type: ignore[misc]

    def deliver_to(self, sink: Callable[[StreamEvent], None]) -> None:
        """Hand every event to `sink` as it is emitted, instead of queueing it for `events()`.

        The relay path of the gateway uses this to save a task hand-off per result. Events
        already queued go to `sink` first, in order; `events()` then only ends the stream
        (returns, or raises the `ProviderError` that ended it).
        """
        queued: list[object] = []
        while not self._events.empty():
            queued.append(self._events.get_nowait())
        self._sink = sink
        for index, item in enumerate(queued):
            if item is _END or isinstance(item, ProviderError):
                for rest in queued[index:]:
                    self._events.put_nowait(rest)
                return
            sink(item)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        """Close the upstream now (idempotent); `events()` ends."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._shutdown()
        except Exception:  # noqa: BLE001 - closing must never raise
            logger.debug("%s shutdown failed", self.provider, exc_info=True)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
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
        if not self._ended:
            if self._sink is not None:
                self._sink(event)
            else:
                await self._events.put(event)

    def _finish(self) -> None:
        """The stream is over; `events()` ends after what was already emitted."""
        if not self._ended:
            self._ended = True
            self._put_terminal(_END)

    def _fail(self, error: ProviderError) -> None:
        """End the stream with an error raised from `events()`."""
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
            except ProviderError as err:
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
        except ProviderError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the mapping boundary
            raise self._map_exception(exc) from exc

    def _map_exception(self, exc: Exception) -> ProviderError:
        """Turn a transport/SDK exception into a `ProviderError`. Providers may refine this."""
        return map_transport_exception(exc, self.provider)


def map_transport_exception(exc: BaseException, provider: str) -> ProviderError:
    """Map common transport exceptions (websockets, httpx, OS, timeouts) to the error tree."""
    name = type(exc).__name__
    module = type(exc).__module__
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(f"timed out ({name})", provider=provider, retryable=True)
    if isinstance(exc, ConnectionRefusedError | ConnectionResetError | OSError):
        return ProviderUnavailable(f"cannot reach upstream: {exc}", provider=provider,
                                   retryable=True)
    if module.startswith("httpx"):
        if "Timeout" in name:
            return ProviderTimeout(f"timed out ({name})", provider=provider, retryable=True)
        if "Connect" in name:
            return ProviderUnavailable(f"cannot reach upstream: {exc}", provider=provider,
                                       retryable=True)
    return ProviderProtocolError(f"{name}: {exc}", provider=provider, retryable=True)


# ------------------------------------------------------------------------------ adapters


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What an adapter gets from the gateway: only its own settings, never the whole config."""

    api_key: str | None = None
    base_url: str | None = None
    connect_timeout: float = 10.0
    flush_timeout: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)


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
