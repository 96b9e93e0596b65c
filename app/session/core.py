"""The session core: one transcription session, whatever front-end carries it.

Front-ends (the native WebSocket, xrx, Prosa, Socket.IO, batch REST) authenticate, build a
`SessionRequest`, then::

    async with open_session(gateway, request, principal, origin=...) as session:
        await session.send_audio(pcm)       # any length, client rate; awaits = backpressure
        await session.finalize()            # -> finals, then Finalized
        await session.close_stream()        # -> remaining finals, then SessionEnded
        async for event in session.events(): ...   # SessionCreated first; SessionEnded or
                                                   # SessionError (fatal, then close) last

The session has one upstream, an `adapters.fallback.FallbackStream` (which owns fallback with
replay, time shifts and the resampling to each model's rate). Here: the odd-byte carry, the
relay rules (`relay`), the limits and metering (`limits`), and the life cycle, one `State`.

Events: the upstream's are read by the front-end's writer itself (`events`), through the
relay rules, from the adapter's bounded queue: no task hand-off, and a client that stops
reading stops the upstream's reader. The session's own events (created, warnings when the
upstream cannot take them in line, the last event) wait in its bounded `EventQueue`.

Release before close: when the session ends, its usage is written, its lease released and it
leaves ``gateway.sessions`` *before* the last event (`SessionEnded`/`SessionError`) is handed
to the front-end, so a client reconnecting as soon as it sees the close is admitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from adapters import base as ab
from adapters._tasks import cancel_and_wait
from adapters.fallback import FallbackStream, Opened
from adapters.registry import ModelId
from app.audio import BYTES_PER_SAMPLE, PcmFramer, Resampler
from app.errors import GatewayError, to_gateway_error
from app.params import SessionRequest
from app.session import limits
from app.session.events import (
    EventQueue,
    SessionCreated,
    SessionEnded,
    SessionError,
    SessionEvent,
    SessionWarning,
    Terminal,
)
from app.session.relay import Relay
from auth.access import check_model_allowed
from auth.base import Admission, Principal

if TYPE_CHECKING:
    from app.gateway import Gateway

logger = logging.getLogger(__name__)

FINALIZE_WAIT = 10.0  # bounded wait for finals before a forced close


class State(enum.Enum):
    OPEN = "open"  # audio flows
    CLOSING = "closing"  # the client ended its audio; remaining finals, then SessionEnded
    FORCED = "forced"  # a limit or the server ends it: remaining finals, then SessionError
    ENDED = "ended"  # last event decided, lease released; the front-end is delivering
    CLOSED = "closed"  # aclose() done


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
        self.state = State.OPEN
        self._out = EventQueue()
        self._framer = PcmFramer()
        self._relay = Relay(interim_results=request.options.interim_results)
        self._limits = limits.Limits.starting_now(settings.idle_timeout,
                                                  settings.max_session_seconds)
        self._meter = limits.Meter(admission)
        self.stream = FallbackStream([request.model, *request.fallback], self._open,
                                     request.options, replay_seconds=settings.replay_seconds)
        self._upstream_over = asyncio.Event()  # the upstream's events ended (or failed)
        self._reader_started = False
        self._watch_task: asyncio.Task[None] | None = None
        self._released = False
        self._closed_event = asyncio.Event()
        self._client_bytes = 0
        self._close_requested: float | None = None

    # ---- properties ---------------------------------------------------------------------

    @property
    def audio_seconds(self) -> float:
        """Audio received from the client, in seconds of the client's stream."""
        return self._client_bytes / (BYTES_PER_SAMPLE * self.request.options.sample_rate)

    @property
    def input_closed(self) -> bool:
        """True once the client ended its audio (close_stream, empty frame), a limit did, or
        the session is over."""
        return self.state is not State.OPEN

    @property
    def model_id(self) -> str:
        try:
            return self.stream.serving.model_id
        except RuntimeError:
            return self.request.model

    @property
    def provider_seconds(self) -> dict[str, float]:
        return self.stream.seconds_by_model

    @property
    def first_result_ms(self) -> float | None:
        return self._relay.first_result_ms

    @property
    def final_after_end_ms(self) -> float | None:
        """From the client's end of audio (close_stream) to the last final."""
        last_final = self._relay.last_final_at
        if self._close_requested is None or last_final is None:
            return None
        return max(0.0, (last_final - self._close_requested) * 1000)

    # ---- client operations ----------------------------------------------------------------

    async def send_audio(self, data: bytes) -> None:
        """Forward client PCM; returns once the upstream has taken it (backpressure), or at
        once when the session is over."""
        if self.state in (State.CLOSING, State.FORCED):
            raise GatewayError(4400, "audio after close_stream", code="invalid_message")
        if self.state is not State.OPEN:
            return
        self._limits.last_activity = time.monotonic()  # touch(), inlined: the hot path
        if self._relay.first_audio is None and data:
            self._relay.first_audio = time.monotonic()
        self._client_bytes += len(data)
        pcm = self._framer.push(data)
        if pcm:
            try:
                await self.stream.send_audio(pcm)
            except ab.ProviderError:
                pass  # reported where its events are read (`events`)

    async def finalize(self) -> None:
        self._limits.touch()
        if self.state is State.OPEN:
            with contextlib.suppress(ab.ProviderError):
                await self.stream.finalize()

    async def close_stream(self) -> None:
        """No more audio; remaining finals, then `SessionEnded`."""
        if self.state is not State.OPEN:
            return
        self.state = State.CLOSING
        self._close_requested = time.monotonic()
        with contextlib.suppress(ab.ProviderError):
            await self.stream.close_stream()

    async def drain(self) -> None:
        """Server shutdown: the provider's finals for the audio received, then close 1012;
        returns once the session is closed (its front-end has delivered everything)."""
        if self.state is State.OPEN:
            await self._finalize_then_fail(GatewayError(1012, "server restarting; reconnect"))
        await self._closed_event.wait()

    def touch(self) -> None:
        """Reset the idle timer (audio and keepalive)."""
        self._limits.touch()

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Everything for the client, in order: `SessionCreated` first, `SessionEnded` or
        `SessionError` last. Read from one task (the front-end's writer): the upstream's
        events are relayed as that task reads them, with no hand-off through another task,
        so a client that stops reading stops the upstream's reader (backpressure)."""
        if self._reader_started:
            raise RuntimeError("Session.events() has one reader; keep the first iterator")
        self._reader_started = True
        while self._out.ready():
            yield self._out.get_nowait()
        try:
            async for event in self.stream.events():
                out = self._relay(event)
                if out is not None:
                    yield out
        except ab.ProviderError as exc:
            self._upstream_over.set()
            await self._end(SessionError(to_gateway_error(exc)))
        else:
            self._upstream_over.set()
            if self.state is State.CLOSING:
                await self._end(self._ended("close_stream"))
            elif self.state is State.OPEN:
                await self._end(SessionError(GatewayError(
                    4502, f"{self.stream.serving.provider} ended the stream unexpectedly")))
            # FORCED: the limit's own error follows; ENDED/CLOSED: nothing more to say
        while True:
            last = await self._out.get()
            yield last
            if isinstance(last, SessionEnded | SessionError):
                return

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the first model that works (primary, then fallbacks); emit `SessionCreated`."""
        try:
            await self.stream.start()
        except ab.ProviderError as exc:
            raise to_gateway_error(exc) from None
        serving = self.stream.serving
        warnings = [f"unknown parameter {name!r} ignored" for name in self.request.unknown_params]
        first_error = self.stream.first_error
        if first_error is not None:
            warnings.append(f"{self.request.model} unavailable "
                            f"({to_gateway_error(first_error).message}); "
                            f"using {serving.model_id}")
        self._out.offer(SessionCreated(
            session_id=self.id, model=serving.model_id, provider=serving.provider,
            language=serving.stream.options.language,
            sample_rate=self.request.options.sample_rate, options=dict(serving.statuses),
            warnings=(*warnings, *serving.warnings)))
        self._watch_task = asyncio.create_task(limits.watch(
            self._limits, self._meter, usage=lambda: (self.audio_seconds, self.model_id),
            input_open=lambda: self.state is State.OPEN, warn=self._warn,
            end=self._finalize_then_fail), name=f"{self.id}:limits")

    async def aclose(self) -> None:
        """Stop everything, close the upstream, record usage, release the lease. Idempotent."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        try:
            await cancel_and_wait([self._watch_task])
        finally:
            try:
                await self.stream.aclose()
            finally:
                await self._release()
                self._closed_event.set()

    # ---- internals ----------------------------------------------------------------------------

    async def _open(self, model: str) -> Opened:
        """Open one candidate's stream (the `FallbackStream`'s opener)."""
        model_id = ModelId.parse(model)
        adapter, name, caps = self.gateway.registry.resolve(model_id)
        req = self.request.options
        if caps.languages and req.language != "auto" and req.language not in caps.languages:
            raise GatewayError(
                4400, f"invalid parameter language: {model_id} supports "
                      f"{', '.join(caps.languages[:8])}, not {req.language!r}",
                code="invalid_parameter")
        wanted = dataclasses.replace(req, sample_rate=caps.input_sample_rate)
        options, statuses, warnings = ab.check_options(caps, wanted)
        stream = adapter.open_stream(name, options)
        try:
            await stream.start()
        except BaseException:
            await stream.aclose()
            raise
        resampler = Resampler(req.sample_rate, caps.input_sample_rate)
        return Opened(str(model_id), adapter.provider, stream, resampler.process,
                      dict(statuses), tuple(warnings))

    def _warn(self, warning: SessionWarning) -> None:
        # In line with the upstream's events (the front-end may be waiting on them).
        if self.stream.notify(ab.ProviderWarning(warning.code, warning.message)):
            return
        if not self._out.offer(warning):
            logger.info("session %s: warning not delivered, client not reading: %s",
                        self.id, warning.message)

    async def _finalize_then_fail(self, err: GatewayError) -> None:
        """Deliver pending finals (bounded wait), then end with `err` instead of a clean end.
        (After the client's close_stream, at once; if another forced end is under way, that
        one ends the session.)"""
        if self.state is State.FORCED:
            return
        if self.state is State.OPEN:
            self.state = State.FORCED
            self.stream.disable_fallback()
            with contextlib.suppress(TimeoutError, ab.ProviderError):
                async with asyncio.timeout(FINALIZE_WAIT):
                    await self.stream.close_stream()
                    await self._upstream_over.wait()  # its finals were read
            if not self._upstream_over.is_set():
                await self.stream.aclose()  # stalled, or nobody reads: its events end now
        await self._end(SessionError(err))

    async def _end(self, event: Terminal) -> None:
        """The session is over: release it, then hand the last event to the front-end."""
        if self._out.ended or self.state is State.CLOSED:
            return
        self.state = State.ENDED
        await self._release()
        self._out.end(event)

    async def _release(self) -> None:
        """Write usage, free the lease, leave the gateway's sessions. Once."""
        if self._released:
            return
        self._released = True
        self.gateway.sessions.discard(self)
        try:
            await self._meter.record(self.audio_seconds, self.model_id)
        finally:
            await self.admission.release()
            self.gateway.metrics.session_closed(self)

    def _ended(self, reason: str) -> SessionEnded:
        final_after = self.final_after_end_ms
        first = self._relay.first_result_ms
        return SessionEnded(
            reason=reason, audio_seconds=round(self.audio_seconds, 3),
            provider_seconds={k: round(v, 3) for k, v in self.provider_seconds.items()},
            first_partial_ms=None if first is None else round(first, 1),
            final_after_end_ms=None if final_after is None else round(final_after, 1))


@contextlib.asynccontextmanager
async def open_session(gateway: Gateway, request: SessionRequest, principal: Principal, *,
                       origin: str | None = None) -> AsyncIterator[Session]:
    """Check the models exist (the fallbacks too) and the key may use them, take a lease,
    open the upstream.

    Raises `GatewayError` (4404 unknown model, 4403/4429/4402 refusals, 4503 unconfigured...)
    before any upstream is opened when the session cannot start. The key's ``allowed_models``
    apply to the model *and* every fallback model (4403 naming the first one refused).
    """
    if gateway.draining:
        raise GatewayError(1012, "server restarting; reconnect")
    for model in (request.model, *request.fallback):
        try:
            gateway.registry.resolve(model)
        except ab.ModelNotFound as exc:  # a typo in a fallback would never work: say so now
            raise to_gateway_error(exc) from None
        except ab.ProviderNotConfigured as exc:
            if not request.fallback:
                raise to_gateway_error(exc) from None
    try:
        for model in (request.model, *request.fallback):
            check_model_allowed(principal.key, model)
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
    if session.state is State.OPEN:  # not already over (and released)
        gateway.sessions.add(session)
    try:
        yield session
    finally:
        gateway.sessions.discard(session)
        await session.aclose()
