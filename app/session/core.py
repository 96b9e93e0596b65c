"""The session core: one transcription session, whatever front-end carries it.

Front-ends (the native WebSocket, xrx, Prosa, Socket.IO, batch REST) authenticate, build a
`SessionRequest`, then::

    async with open_session(gateway, request, principal, origin=...) as session:
        await session.send_audio(pcm)       # any length, client rate; awaits = backpressure
        await session.finalize()            # -> finals, then Finalized
        await session.close_stream()        # -> remaining finals, then SessionEnded
        async for event in session.events(): ...   # SessionCreated first; SessionEnded or
                                                   # SessionError (fatal, then close) last

The core owns resampling, the odd-byte carry, times in session seconds, the exactly-once rule
for finals, fallback to other models, idle and length limits, usage metering and quota
enforcement. Front-ends only translate the wire protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapters import base as ab
from app.audio import BYTES_PER_SAMPLE, PcmFramer, Resampler
from app.errors import GatewayError, to_gateway_error
from app.params import SessionRequest
from auth.base import Admission, Principal

if TYPE_CHECKING:
    from app.gateway import Gateway

logger = logging.getLogger(__name__)

USAGE_INTERVAL = 5.0  # seconds between usage writes (API.md §4 asks for at most 10)
FINALIZE_WAIT = 10.0  # bounded wait for finals before a forced close


# ------------------------------------------------------------------------ session events


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
class ProviderSwitched:
    from_model: str
    to_model: str
    reason: str
    replayed_seconds: float


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


# ------------------------------------------------------------------------------ upstream


@dataclass
class _Upstream:
    """The provider stream currently serving the session."""

    model_id: str
    provider: str
    stream: ab.SttStream
    resampler: Resampler
    rate: int
    offset: float  # session time of this stream's t=0
    prefix: str  # segment-id prefix (streams after a fallback switch)
    sent_seconds: float = 0.0  # audio handed to this stream


@dataclass
class _ReplayBuffer:
    """Adapter-rate audio since the last final, for replay into a fallback provider."""

    max_seconds: float
    chunks: deque[tuple[float, bytes, int]] = field(default_factory=deque)  # (start, pcm, rate)

    def add(self, start: float, pcm: bytes, rate: int) -> None:
        self.chunks.append((start, pcm, rate))
        while self.chunks and self.duration() > self.max_seconds:
            self.chunks.popleft()

    def drop_before(self, time_s: float) -> None:
        while self.chunks:
            start, pcm, rate = self.chunks[0]
            if start + len(pcm) / (BYTES_PER_SAMPLE * rate) > time_s:
                break
            self.chunks.popleft()

    def duration(self) -> float:
        return sum(len(p) / (BYTES_PER_SAMPLE * r) for _, p, r in self.chunks)


class Session:
    """One transcription session. Use `open_session`, not the constructor."""

    def __init__(self, gateway: Gateway, request: SessionRequest, principal: Principal,
                 admission: Admission) -> None:
        self.gateway = gateway
        self.request = request
        self.principal = principal
        self.admission = admission
        self.id = "sess_" + uuid.uuid4().hex[:20]
        settings = gateway.settings
        self._idle_timeout = settings.idle_timeout
        self._max_seconds = settings.max_session_seconds
        self._out: asyncio.Queue[SessionEvent] = asyncio.Queue()
        self._lock = asyncio.Lock()  # serializes upstream operations (send/finalize/switch)
        self._framer = PcmFramer()
        self._replay = _ReplayBuffer(settings.replay_seconds)
        self._candidates = list(request.fallback)
        self._upstream: _Upstream | None = None
        self._finals: set[str] = set()
        self._partial_ids: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._closed_event = asyncio.Event()
        self._done = False
        self._input_closed = False
        self._finalize_pending = 0
        self._forced_end = False  # a limit is closing the session: no clean SessionEnded
        self._client_bytes = 0
        self._metered_seconds = 0.0
        self.provider_seconds: dict[str, float] = {}
        self._started = time.monotonic()
        self._last_activity = self._started
        self._first_audio: float | None = None
        self._first_partial_ms: float | None = None
        self._close_requested: float | None = None
        self._last_final_at: float | None = None

    # ---- properties ---------------------------------------------------------------------

    @property
    def audio_seconds(self) -> float:
        """Audio received from the client, in seconds of the client's stream."""
        return self._client_bytes / (BYTES_PER_SAMPLE * self.request.options.sample_rate)

    @property
    def input_closed(self) -> bool:
        """True once the client ended its audio (close_stream, empty frame, or a limit)."""
        return self._input_closed

    @property
    def model_id(self) -> str:
        return self._upstream.model_id if self._upstream else self.request.model

    # ---- client operations ----------------------------------------------------------------

    async def send_audio(self, data: bytes) -> None:
        """Forward client PCM; returns once the upstream has taken it (backpressure)."""
        if self._input_closed:
            raise GatewayError(4400, "audio after close_stream", code="invalid_message")
        self.touch()
        if self._first_audio is None and data:
            self._first_audio = time.monotonic()
        self._client_bytes += len(data)
        pcm = self._framer.push(data)
        if pcm:
            await self._forward(pcm, last=False)

    async def finalize(self) -> None:
        self.touch()
        async with self._lock:
            if self._upstream is None or self._input_closed:
                return
            self._finalize_pending += 1
            await self._call(self._upstream.stream.finalize())

    async def close_stream(self) -> None:
        """No more audio; remaining finals, then `SessionEnded`."""
        if self._input_closed:
            return
        self._close_requested = time.monotonic()
        await self._forward(b"", last=True)
        self._input_closed = True
        async with self._lock:
            if self._upstream is not None:
                await self._call(self._upstream.stream.close_stream())

    async def drain(self) -> None:
        """Server shutdown: the provider's finals for the audio received, then close 1012;
        returns once the session is closed (its front-end has delivered everything)."""
        if not self._done and not self._input_closed:  # else it is ending already
            await self._finalize_then_fail(GatewayError(1012, "server restarting; reconnect"))
        await self._closed_event.wait()

    def touch(self) -> None:
        """Reset the idle timer (audio and keepalive)."""
        self._last_activity = time.monotonic()

    async def events(self) -> AsyncIterator[SessionEvent]:
        while True:
            event = await self._out.get()
            yield event
            if isinstance(event, SessionEnded | SessionError):
                return

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the first model that works (primary, then fallbacks); emit `SessionCreated`."""
        first_error: GatewayError | None = None
        candidates = [self.request.model, *self._candidates]
        for index, model_id in enumerate(candidates):
            try:
                upstream, statuses, warnings = await self._open(model_id, offset=0.0, prefix="")
            except GatewayError as err:
                first_error = first_error or err
                if not (err.retryable or err.close_code in (4503, 4504, 4502)) \
                        or index == len(candidates) - 1:
                    raise first_error from None
                logger.info("session %s: %s failed (%s), trying fallback", self.id, model_id,
                            err.message)
                continue
            self._candidates = candidates[index + 1:]
            self._upstream = upstream
            unknown = [f"unknown parameter {name!r} ignored" for name in
                       self.request.unknown_params]
            if first_error is not None:
                warnings.insert(0, f"{self.request.model} unavailable ({first_error.message}); "
                                   f"using {model_id}")
            self._emit(SessionCreated(
                session_id=self.id, model=model_id, provider=upstream.provider,
                language=upstream.stream.options.language,
                sample_rate=self.request.options.sample_rate, options=statuses,
                warnings=tuple(unknown + warnings)))
            break
        self._tasks.append(asyncio.create_task(self._pump(), name=f"{self.id}:pump"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name=f"{self.id}:watchdog"))

    async def aclose(self) -> None:
        """Stop everything, close the upstream, record usage, release the lease. Idempotent."""
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(BaseException):
                    await task
        if self._upstream is not None:
            await self._upstream.stream.aclose()
        try:
            await self._meter()
        finally:
            await self.admission.release()
            self.gateway.metrics.session_closed(self)
            self._closed_event.set()

    # ---- internals ----------------------------------------------------------------------------

    async def _open(self, model_id: str, offset: float,
                    prefix: str) -> tuple[_Upstream, dict[str, str], list[str]]:
        try:
            adapter, model, caps = self.gateway.registry.resolve(model_id)
        except ab.ProviderError as exc:
            raise to_gateway_error(exc) from None
        req = self.request.options
        if caps.languages and req.language != "auto" and req.language not in caps.languages:
            raise GatewayError(
                4400, f"invalid parameter language: {model_id} supports "
                      f"{', '.join(caps.languages[:8])}, not {req.language!r}",
                code="invalid_parameter")
        wanted = dataclasses.replace(req, sample_rate=caps.input_sample_rate)
        options, statuses, warnings = ab.check_options(caps, wanted)
        stream = adapter.open_stream(model, options)
        try:
            await stream.start()
        except BaseException as exc:
            await stream.aclose()
            raise to_gateway_error(exc) from None
        upstream = _Upstream(model_id=model_id, provider=adapter.provider, stream=stream,
                             resampler=Resampler(req.sample_rate, caps.input_sample_rate),
                             rate=caps.input_sample_rate, offset=offset, prefix=prefix)
        return upstream, dict(statuses), list(warnings)

    async def _forward(self, pcm: bytes, last: bool) -> None:
        async with self._lock:
            up = self._upstream
            if up is None:
                return
            out = up.resampler.process(pcm, last=last)
            if not out:
                return
            start = up.offset + up.sent_seconds
            seconds = len(out) / (BYTES_PER_SAMPLE * up.rate)
            up.sent_seconds += seconds
            self.provider_seconds[up.model_id] = self.provider_seconds.get(up.model_id, 0.0) \
                + seconds
            if self._candidates:
                self._replay.add(start, out, up.rate)
            await self._call(up.stream.send_audio(out))

    async def _call(self, coro: Any) -> None:
        """Run an upstream operation; a provider failure is handled by the pump."""
        try:
            await coro
        except ab.ProviderError as exc:
            logger.info("session %s: upstream operation failed: %s", self.id, exc)
            # The stream's events() will raise the error (or already did); make sure it ends.
            if self._upstream is not None:
                self._upstream.stream._fail(exc)

    def _emit(self, event: SessionEvent) -> None:
        if not self._done:
            if isinstance(event, SessionEnded | SessionError):
                self._done = True
            self._out.put_nowait(event)

    async def _pump(self) -> None:
        """Upstream events -> session events, with fallback on upstream failure."""
        while True:
            up = self._upstream
            assert up is not None
            try:
                # Results reach the front-end without a hand-off through this task; the loop
                # only waits for the stream's end (or error).
                up.stream.deliver_to(functools.partial(self._relay, up))
                async for event in up.stream.events():
                    self._relay(up, event)
            except ab.ProviderError as exc:
                err = to_gateway_error(exc)
                if not self._forced_end and await self._switch(up, err):
                    continue
                self._emit(SessionError(err))
                return
            if self._forced_end:
                return
            if self._input_closed:
                self._emit(self._ended("close_stream"))
            else:
                self._emit(SessionError(GatewayError(
                    4502, f"{up.provider} ended the stream unexpectedly")))
            return

    def _relay(self, up: _Upstream, event: ab.StreamEvent) -> None:
        now = time.monotonic()
        if isinstance(event, ab.Transcript):
            seg = up.prefix + event.segment_id
            if seg in self._finals:
                logger.debug("session %s: dropped repeated final/partial %s", self.id, seg)
                return
            shifted = _shift_transcript(event, up.offset, seg)
            if event.is_final:
                if not event.text and seg not in self._partial_ids:
                    return  # nothing was said and nothing shown: no final needed
                self._finals.add(seg)
                self._partial_ids.discard(seg)
                self._last_final_at = now
                self._replay.drop_before(shifted.end)
                if self._first_partial_ms is None and self._first_audio is not None:
                    self._first_partial_ms = (now - self._first_audio) * 1000
            else:
                if not self.request.options.interim_results or not event.text:
                    return
                self._partial_ids.add(seg)
                if self._first_partial_ms is None and self._first_audio is not None:
                    self._first_partial_ms = (now - self._first_audio) * 1000
            self._emit(shifted)
        elif isinstance(event, ab.SpeechStarted):
            self._emit(ab.SpeechStarted(round(event.time + up.offset, 3)))
        elif isinstance(event, ab.UtteranceEnd):
            self._emit(ab.UtteranceEnd(round(event.time + up.offset, 3)))
        elif isinstance(event, ab.Finalized):
            if self._finalize_pending > 0:
                self._finalize_pending -= 1
                self._emit(event)
        elif isinstance(event, ab.ProviderWarning):
            self._emit(SessionWarning(event.code, event.message))
        elif isinstance(event, ab.TurnEvent):
            self._emit(event)
        # ProviderUsage is informational; billing uses the audio we sent.

    async def _switch(self, failed: _Upstream, err: GatewayError) -> bool:
        """Move to the next fallback model, replaying audio since the last final."""
        retryable = err.retryable or err.close_code in (4502, 4503, 4504)
        if not retryable or self._closed:
            return False
        async with self._lock:
            while self._candidates:
                model_id = self._candidates.pop(0)
                replay = list(self._replay.chunks)
                offset = replay[0][0] if replay else failed.offset + failed.sent_seconds
                try:
                    upstream, _, _ = await self._open(
                        model_id, offset=offset, prefix=f"{len(self.provider_seconds)}-")
                except GatewayError as exc:
                    logger.info("session %s: fallback %s failed: %s", self.id, model_id,
                                exc.message)
                    continue
                await failed.stream.aclose()
                self._upstream = upstream
                replayed = 0.0
                for _start, pcm, rate in replay:
                    data = pcm if rate == upstream.rate else Resampler(rate, upstream.rate) \
                        .process(pcm, last=True)
                    seconds = len(data) / (BYTES_PER_SAMPLE * upstream.rate)
                    upstream.sent_seconds += seconds
                    replayed += seconds
                    await self._call(upstream.stream.send_audio(data))
                self.provider_seconds[model_id] = self.provider_seconds.get(model_id, 0.0) \
                    + replayed
                self._emit(ProviderSwitched(failed.model_id, model_id, err.message,
                                            round(replayed, 3)))
                if self._input_closed:
                    await self._call(upstream.stream.close_stream())
                return True
        return False

    async def _watchdog(self) -> None:
        """Idle timeout, maximum length, usage metering and quota enforcement."""
        next_meter = time.monotonic() + USAGE_INTERVAL
        while not self._done:
            await asyncio.sleep(min(0.5, self._idle_timeout / 4))
            now = time.monotonic()
            if now >= next_meter:
                next_meter = now + USAGE_INTERVAL
                await self._meter()
                for code, message in self.admission.warnings():
                    self._emit(SessionWarning(code, message))
                if self.admission.exhausted:
                    await self._finalize_then_fail(GatewayError(
                        4402, "audio quota exhausted for this key", code="quota_exceeded"))
                    return
            if not self._input_closed and now - self._last_activity > self._idle_timeout:
                await self._finalize_then_fail(GatewayError(
                    4408, f"idle timeout: no audio or keepalive for {self._idle_timeout:g} s"))
                return
            if now - self._started > self._max_seconds:
                await self._finalize_then_fail(GatewayError(
                    4413, f"session longer than max_session_seconds={self._max_seconds:g}"))
                return

    async def _finalize_then_fail(self, err: GatewayError) -> None:
        """Deliver pending finals (bounded wait), then end with `err` instead of a clean end."""
        up = self._upstream
        pump = self._tasks[0]
        if up is not None and not self._input_closed:
            self._input_closed = True
            self._forced_end = True
            async with self._lock:
                await self._call(up.stream.close_stream())
            await asyncio.wait({pump}, timeout=FINALIZE_WAIT)
        pump.cancel()
        self._emit(SessionError(err))

    async def _meter(self) -> None:
        delta = self.audio_seconds - self._metered_seconds
        if delta <= 0:
            return
        self._metered_seconds += delta
        try:
            await self.admission.record_usage(delta, self.model_id)
        except Exception:  # noqa: BLE001 - metering must not kill a session
            logger.warning("session %s: usage not recorded", self.id, exc_info=True)

    def _ended(self, reason: str) -> SessionEnded:
        final_after = None
        if self._close_requested is not None and self._last_final_at is not None:
            final_after = max(0.0, (self._last_final_at - self._close_requested) * 1000)
        return SessionEnded(
            reason=reason, audio_seconds=round(self.audio_seconds, 3),
            provider_seconds={k: round(v, 3) for k, v in self.provider_seconds.items()},
            first_partial_ms=None if self._first_partial_ms is None
            else round(self._first_partial_ms, 1),
            final_after_end_ms=None if final_after is None else round(final_after, 1))


def _shift_transcript(event: ab.Transcript, offset: float, segment_id: str) -> ab.Transcript:
    if offset == 0.0 and segment_id == event.segment_id:
        return event
    words = tuple(dataclasses.replace(w, start=round(w.start + offset, 3),
                                      end=round(w.end + offset, 3)) for w in event.words)
    return dataclasses.replace(event, segment_id=segment_id, start=round(event.start + offset, 3),
                               end=round(event.end + offset, 3), words=words)


@contextlib.asynccontextmanager
async def open_session(gateway: Gateway, request: SessionRequest, principal: Principal, *,
                       origin: str | None = None) -> AsyncIterator[Session]:
    """Check the model exists and the key may use it, take a lease, open the upstream.

    Raises `GatewayError` (4404 unknown model, 4403/4429/4402 refusals, 4503 unconfigured...)
    before any upstream is opened when the session cannot start.
    """
    if gateway.draining:
        raise GatewayError(1012, "server restarting; reconnect")
    try:
        gateway.registry.resolve(request.model)
    except ab.ModelNotFound as exc:
        raise to_gateway_error(exc) from None
    except ab.ProviderNotConfigured as exc:
        if not request.fallback:
            raise to_gateway_error(exc) from None
    try:
        admission = await gateway.access.admit(principal, request.model, origin=origin)
    except Exception as exc:  # AccessDenied and store failures alike
        raise to_gateway_error(exc) from None
    session = Session(gateway, request, principal, admission)
    gateway.metrics.session_opened(session)
    try:
        await session.start()
    except BaseException:
        await session.aclose()
        raise
    gateway.sessions.add(session)
    try:
        yield session
    finally:
        gateway.sessions.discard(session)
        await session.aclose()
