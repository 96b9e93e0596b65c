"""`FallbackStream`: one `SttStream` over an ordered list of candidate models.

The session core talks to this stream alone. It opens the first candidate that works (a
candidate that fails to open with a *switchable* error makes way for the next), and when the
serving stream fails mid-stream with a switchable error it moves to the next candidate:

- the failed stream is closed (its adapter tells the provider the stream is over);
- the audio since the last final (the replay buffer, at most ``replay_seconds``) is sent to
  the new stream, so no word of the failed part is lost; `ProviderSwitched` says how much was
  replayed and how much (``lost_seconds``) was older than the buffer holds;
- the new stream's times are shifted into session time (its t=0 is where the replay starts)
  and its segment ids get a prefix (``"1-"``, ``"2-"``...), so they never collide with the
  earlier streams'; a finalize the failed stream had not acknowledged is asked again.

What is switchable (`switchable`): an upstream that is unreachable, unconfigured, rejects our
credentials, times out, or fails with an error it marks retryable. A bad request, an unknown
model, a rate limit or any internal error (a bug) never switches: it ends the stream.

No lock is held across a wait that a dead upstream could make endless: a task inside an
operation on a candidate stream is registered with it, and cancelled (the operation is
abandoned, the task goes on) the moment that stream is known to be over (it failed, or this
stream is closing), so callers blocked in `send_audio` are released. (One set entry per
operation rather than a cancel scope each: `send_audio` is the relay's hot path.)

Audio in: 16-bit mono PCM at ``options.sample_rate`` (the client's rate); each candidate comes
with its own converter to its stream's rate. Times out: seconds of that input audio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from adapters._replay import ReplayBuffer, shift_transcript
from adapters._tasks import cancel_and_wait
from adapters.base import (
    BYTES_PER_SAMPLE,
    Finalized,
    ProviderAuthError,
    ProviderError,
    ProviderNotConfigured,
    ProviderProtocolError,
    ProviderSwitched,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderWarning,
    SpeechStarted,
    StreamEvent,
    StreamOptions,
    SttStream,
    Transcript,
    UtteranceEnd,
    event_of,
)

logger = logging.getLogger(__name__)

CLOSE_WAIT = 10.0  # bound on closing a failed stream in the background
# finalize() calls awaiting their `Finalized` at once; one more waits for an answer (the
# client's reader stops: backpressure), so no adapter tracks more requests than this.
MAX_FINALIZES_IN_FLIGHT = 64

_SWITCHABLE = (ProviderUnavailable, ProviderNotConfigured, ProviderAuthError, ProviderTimeout)


def switchable(error: ProviderError) -> bool:
    """Whether `error` is a reason to try the next candidate (see the module docstring)."""
    return isinstance(error, _SWITCHABLE) or error.retryable


Convert = Callable[[bytes, bool], bytes]


@dataclass(frozen=True, slots=True)
class Opened:
    """A started stream of one candidate, as the opener returns it."""

    model_id: str
    provider: str
    stream: SttStream
    convert: Convert  # input-rate PCM -> the stream's rate; (pcm, last) with last=flush
    statuses: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


Opener = Callable[[str], Awaitable[Opened]]
"""Opens and starts the stream of a model id; raises `ProviderError` (or any exception for a
candidate that cannot serve this request) and leaves nothing open when it does."""


@dataclass
class _Serving:
    """A candidate stream in use (or that was)."""

    opened: Opened
    offset: float  # session time of this stream's t=0
    prefix: str  # prefix of its segment ids
    pending_finalize: int = 0
    over: bool = False  # failed or closed: operations on it are abandoned
    busy: set[asyncio.Task[object]] = field(default_factory=set)  # tasks inside an operation
    abandoned: set[asyncio.Task[object]] = field(default_factory=set)  # cancelled by `end`
    answered: asyncio.Event = field(default_factory=asyncio.Event)  # a Finalized came, or over

    def end(self) -> None:
        """Mark the stream over and release every operation waiting on it."""
        if self.over:
            return
        self.over = True
        self.answered.set()
        for task in self.busy:
            self.abandoned.add(task)
            task.cancel("the stream is over")
        self.busy.clear()


class FallbackStream(SttStream):
    """Candidates in order (the first is the requested model). See the module docstring."""

    provider = "fallback"

    def __init__(self, candidates: Sequence[str], opener: Opener, options: StreamOptions, *,
                 replay_seconds: float) -> None:
        super().__init__("fallback", options, queue_size=2)  # its own queue: only the end
        if not candidates:
            raise ValueError("FallbackStream needs at least one candidate")
        self._candidates = list(candidates)
        self._opener = opener
        self._replay = ReplayBuffer(replay_seconds, options.sample_rate)
        self._order = asyncio.Lock()  # audio, finalize, end of stream and switches in order
        self._serving: _Serving | None = None
        self._samples = 0  # input samples received
        self._covered = 0.0  # session time up to which finals have been seen
        self._switches = 0
        self._closing: set[asyncio.Task[None]] = set()
        self.first_error: ProviderError | None = None  # why the first candidate was skipped
        self.seconds_by_model: dict[str, float] = {}  # audio each model received (replays too)

    # ---- what the session reads ----------------------------------------------------------

    @property
    def serving(self) -> Opened:
        if self._serving is None:
            raise RuntimeError("FallbackStream not started")
        return self._serving.opened

    @property
    def candidates(self) -> tuple[str, ...]:
        """The models not tried yet."""
        return tuple(self._candidates)

    def notify(self, event: ProviderWarning) -> bool:
        """Put `event` in line with the serving stream's events (the consumer of `events()`
        gets it next); False if that stream is over or its queue is full."""
        serving = self._serving
        if serving is None or serving.over:
            return False
        stream = serving.opened.stream
        if stream._ended:  # noqa: SLF001 - the contract's own queue, same package
            return False
        try:
            stream._events.put_nowait(event)  # noqa: SLF001
        except asyncio.QueueFull:
            return False
        return True

    def disable_fallback(self) -> None:
        """No more switches (the session is being ended by a limit)."""
        self._candidates.clear()
        self._replay.chunks.clear()
        self._replay.seconds = 0.0

    # ---- SttStream ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the first candidate that works. Raises the first candidate's error when none
        does, or at once when an error is not switchable (not wrapped: an opener's own
        exceptions, e.g. a parameter the model does not support, reach the caller as is)."""
        await self._start()

    async def _start(self) -> None:
        first: BaseException | None = None
        while self._candidates:
            model_id = self._candidates.pop(0)
            try:
                opened = await self._opener(model_id)
            except ProviderError as exc:
                first = first or exc
                if self.first_error is None:
                    self.first_error = exc
                if not switchable(exc) or not self._candidates:
                    raise first from None
                logger.info("%s unavailable (%s), trying the next model", model_id, exc)
                continue
            except Exception as exc:
                raise (first or exc) from None
            self._serving = _Serving(opened, 0.0, "")
            return
        raise RuntimeError("no candidate")  # pragma: no cover - the constructor forbids it

    async def send_audio(self, pcm: bytes) -> None:
        """Forward input PCM to the serving stream (and keep it for replay while fallbacks
        remain); returns once taken, or at once when that stream is over (no lock is held
        across a wait on a dead stream). The hot path: no `_guard` layer, no `async with`."""
        if self._input_closed or self._closed:
            raise ProviderProtocolError("audio after end of stream", provider=self.provider)
        if not pcm:
            return
        order = self._order
        await order.acquire()
        try:
            serving = self._serving or self._require()
            if self._candidates:
                self._replay.add(self._position, pcm)
            self._samples += len(pcm) // BYTES_PER_SAMPLE
            opened = serving.opened
            data = opened.convert(pcm, False)
            if data and not await self._on(serving, opened.stream.send_audio(data)):
                return
            seconds = len(pcm) / (BYTES_PER_SAMPLE * self.options.sample_rate)
            counted = self.seconds_by_model
            counted[opened.model_id] = counted.get(opened.model_id, 0.0) + seconds
        finally:
            order.release()

    async def _send_audio(self, pcm: bytes) -> None:  # pragma: no cover - send_audio is whole
        await self.send_audio(pcm)

    async def _finalize(self) -> None:
        serving = self._require()
        while serving.pending_finalize >= MAX_FINALIZES_IN_FLIGHT and not serving.over:
            serving.answered.clear()
            await serving.answered.wait()  # bounded: an answer, the adapter's flush timeout
            serving = self._require()  # or the end of that stream (then maybe a switch)
        async with self._order:
            serving = self._require()
            if serving.over or self._input_closed:
                return
            serving.pending_finalize += 1
            await self._on(serving, serving.opened.stream.finalize())

    async def _close_stream(self) -> None:
        async with self._order:
            await self._end_input(self._require())

    async def _end_input(self, serving: _Serving) -> None:
        tail = serving.opened.convert(b"", True)
        if tail:
            await self._on(serving, serving.opened.stream.send_audio(tail))
        await self._on(serving, serving.opened.stream.close_stream())

    async def events(self) -> AsyncIterator[StreamEvent]:
        """The serving stream's events in session terms, `ProviderSwitched` at each switch;
        raises the `ProviderError` that ended the last candidate. One consumer task."""
        while True:
            serving = self._require()
            # The serving stream's queue read here, not through its events(): one generator
            # layer less per event on the relay's hot path.
            queue = serving.opened.stream._events  # noqa: SLF001 - the contract's own queue
            try:
                while (event := event_of(await queue.get())) is not None:
                    translated = self._translate(serving, event)
                    if translated is not None:
                        yield translated
            except ProviderError as exc:
                serving.end()
                switched = await self._switch(serving, exc)  # raises `exc` when it cannot
            else:
                serving.end()
                return
            yield switched

    async def _shutdown(self) -> None:
        serving = self._serving
        if serving is not None:
            serving.end()
            await serving.opened.stream.aclose()
        if self._closing:
            _, slow = await asyncio.wait(self._closing, timeout=CLOSE_WAIT)
            await cancel_and_wait(slow)

    # ---- internals ---------------------------------------------------------------------------

    @property
    def _position(self) -> float:
        """Input seconds received."""
        return self._samples / self.options.sample_rate

    def _require(self) -> _Serving:
        if self._serving is None:
            raise RuntimeError("FallbackStream not started")
        return self._serving

    def _count(self, model: str, seconds: float) -> None:
        self.seconds_by_model[model] = self.seconds_by_model.get(model, 0.0) + seconds

    async def _on(self, serving: _Serving, operation: Awaitable[None]) -> bool:
        """Run an operation on a candidate stream; abandon it if that stream is over.
        True if it completed.

        A `ProviderError` ends that stream (its `events()` raises it, which is where a switch
        happens), so it is not raised here.
        """
        if serving.over:
            if asyncio.iscoroutine(operation):
                operation.close()
            return False
        task = asyncio.current_task()
        assert task is not None
        serving.busy.add(task)
        try:
            try:
                await operation
            finally:
                serving.busy.discard(task)
        except asyncio.CancelledError:
            if task not in serving.abandoned:
                raise
            serving.abandoned.discard(task)
            if task.uncancel() > 0:
                raise  # its owner cancelled it too
            logger.debug("%s: operation abandoned, the stream is over",
                         serving.opened.model_id)
            return False
        except ProviderError as exc:
            logger.info("%s: upstream operation failed: %s", serving.opened.model_id, exc)
            serving.opened.stream._fail(exc)  # noqa: SLF001 - make sure its events() end
            serving.end()
            return False
        return True

    def _translate(self, serving: _Serving, event: StreamEvent) -> StreamEvent | None:
        offset, prefix = serving.offset, serving.prefix
        if isinstance(event, Transcript):
            shifted = shift_transcript(event, offset, prefix)
            if event.is_final:
                self._covered = max(self._covered, shifted.end)
                self._replay.drop_before(shifted.end)
            return shifted
        if isinstance(event, Finalized):
            if serving.pending_finalize <= 0:
                return None  # not asked for (or asked of a stream before a switch)
            serving.pending_finalize -= 1
            serving.answered.set()
            return event
        if offset == 0.0:
            return event
        if isinstance(event, SpeechStarted):
            return SpeechStarted(round(event.time + offset, 3))
        if isinstance(event, UtteranceEnd):
            return UtteranceEnd(round(event.time + offset, 3))
        return event

    async def _switch(self, failed: _Serving, error: ProviderError) -> ProviderSwitched:
        """Open the next candidate and replay into it; raises `error` if there is none."""
        if self._closed or not switchable(error):
            raise error
        self._closing_task(failed.opened.stream)
        async with self._order:
            while self._candidates:
                model_id = self._candidates.pop(0)
                try:
                    opened = await self._opener(model_id)
                except Exception as exc:  # noqa: BLE001 - the next candidate may work
                    logger.info("fallback %s failed: %s", model_id, exc)
                    continue
                return await self._replay_into(failed, opened, error)
        raise error

    async def _replay_into(self, failed: _Serving, opened: Opened,
                           error: ProviderError) -> ProviderSwitched:
        chunks = list(self._replay.chunks)
        start = self._replay.start(self._position)
        lost = max(0.0, start - self._covered)
        self._switches += 1
        serving = _Serving(opened, start, f"{self._switches}-")
        self._serving = serving
        if not self._candidates:
            self.disable_fallback()
        replayed = 0.0
        model = opened.model_id
        for _, pcm in chunks:
            seconds = len(pcm) / (BYTES_PER_SAMPLE * self.options.sample_rate)
            replayed += seconds
            data = opened.convert(pcm, False)
            if not data or await self._on(serving, opened.stream.send_audio(data)):
                self._count(model, seconds)
        for _ in range(failed.pending_finalize):
            serving.pending_finalize += 1
            await self._on(serving, opened.stream.finalize())
        if self._input_closed:
            await self._end_input(serving)
        logger.info("switched from %s to %s (%s): replayed %.3f s, lost %.3f s",
                    failed.opened.model_id, model, error, replayed, lost)
        return ProviderSwitched(failed.opened.model_id, model, str(error), round(replayed, 3),
                                round(lost, 3))

    def _closing_task(self, stream: SttStream) -> None:
        """Close a failed stream without delaying the switch (bounded in `_shutdown`)."""
        task = asyncio.get_running_loop().create_task(stream.aclose(), name="fallback:close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
