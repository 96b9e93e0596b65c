"""Finalize acknowledgements for the streaming adapters (a mixin of `WebSocketStream`).

Deepgram and Soniox answer each finalize themselves (a ``from_finalize`` result, a ``<fin>``
token), in order: each answer is `_finalize_answered()`, which acknowledges the oldest request
still waiting (with the requests made after it while nothing was pending upstream,
`_free_finalize`), never a later one whose audio the provider has not reached yet. OpenAI
answers every commit with its transcript and calls `_finalized()` once none is outstanding.

AssemblyAI (ForceEndpoint) and Gladia (injected silence) never answer a finalize, so the
answer is tied to the audio position of the request: `_finalize_sent(position)` once it is on
the wire, `_final_reached(end)` for every transcript; the final that ends within
`FORCED_FINAL_SLACK` of the point, with no segment open after it, answers it (and every
earlier one). When nothing was pending there, `FINALIZE_SETTLE` s without a transcript since
the request went out answers it. Every finalize is bounded by ``flush_timeout`` s *without
progress*; then a `finalize_timeout` warning precedes the `Finalized`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from adapters.base import AdapterContext, Finalized, ProviderWarning, StreamEvent

# A final that ends within this many seconds of the finalize point is the one the finalize
# forced. Shorter than any word, so a final that ends earlier may still be followed by words
# spoken before the point (the end of a natural turn racing the request).
FORCED_FINAL_SLACK = 0.15
# When no turn is open and no such final comes, the provider has had all the audio before the
# finalize point for this long without a word about it: nothing more to finalize.
FINALIZE_SETTLE = 1.0


class FinalizeBookkeeping:
    # Provided by the stream this is mixed into.
    context: AdapterContext
    _ended: bool
    _last_message: float
    _tasks: set[asyncio.Task[Any]]

    if TYPE_CHECKING:
        async def _emit(self, event: StreamEvent) -> None: ...

    def _segment_open(self) -> bool:
        """Whether the provider has reported speech not yet finalized."""
        return False

    def _init_finalizes(self) -> None:
        # finalize() calls still waiting for their Finalized, in order and grouped: a request
        # the provider answers, then the requests made after it with nothing pending upstream
        # (answered with it). Bounded by the session's stream, which waits with more than
        # `MAX_FINALIZES_IN_FLIGHT` unanswered.
        self._finalize_groups: deque[int] = deque()
        self._finalize_timer: asyncio.TimerHandle | None = None
        self._settle_timer: asyncio.TimerHandle | None = None
        self._finalize_point: float | None = None  # audio position of the newest finalize

    def _expect_finalized(self, delay: float | None = None, *, quiet: bool = False) -> None:
        """A finalize was requested; `_finalized()` answers it, or `flush_timeout` s without
        progress runs out (then a `finalize_timeout` warning precedes the `Finalized`).

        `delay`: for an adapter that knows nothing may be pending upstream, answer after this
        many seconds at the latest (``quiet``: without the warning)."""
        self._finalize_groups.append(1)
        if delay is None:
            self._arm_finalize_timer()
            return
        if self._finalize_timer is not None:
            self._finalize_timer.cancel()
        self._finalize_timer = asyncio.get_running_loop().call_later(
            delay, lambda: self._later(self._release_finalizes(timed_out=not quiet))
            if self._finalize_groups and not self._ended else None)

    def _finalize_sent(self, position: float) -> None:
        """For providers that do not acknowledge a finalize: it reached the wire after
        `position` s of audio (provider time); see `_final_reached`."""
        self._finalize_point = position
        self._arm_settle()

    def _arm_finalize_timer(self) -> None:
        if self._finalize_timer is not None:
            self._finalize_timer.cancel()
        loop = asyncio.get_running_loop()
        self._finalize_timer = loop.call_later(self.context.flush_timeout,
                                               self._finalize_timed_out)

    def _finalize_timed_out(self) -> None:
        self._finalize_timer = None
        if not self._finalize_groups or self._ended:
            return
        if asyncio.get_running_loop().time() - self._last_message < self.context.flush_timeout:
            self._arm_finalize_timer()  # still making progress: keep waiting
            return
        self._later(self._release_finalizes(timed_out=True))

    def _final_reached(self, end: float | None) -> None:
        """A final (ending at `end`, provider audio time) or a partial (`end` None) arrived:
        for providers without a finalize acknowledgement, the finalize is answered by the
        final that reaches its audio position, with no segment open after it."""
        if self._finalize_point is None:
            return
        self._arm_settle()
        if end is not None and not self._segment_open() \
                and end >= self._finalize_point - FORCED_FINAL_SLACK:
            self._later(self._finalized())

    def _arm_settle(self) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        self._settle_timer = asyncio.get_running_loop().call_later(FINALIZE_SETTLE,
                                                                   self._settled)

    def _settled(self) -> None:
        """`FINALIZE_SETTLE` s without a transcript since the finalize (or the last one)."""
        self._settle_timer = None
        if self._finalize_point is None or self._ended:
            return
        if self._segment_open():
            return  # its final answers the finalize, or the finalize timer runs out
        self._later(self._finalized())

    def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _free_finalize(self) -> None:
        """A finalize with nothing pending upstream: answered now, or with the earlier request
        it follows (its `Finalized` must not overtake that request's finals)."""
        if self._finalize_groups:
            self._finalize_groups[-1] += 1
            return
        await self._emit(Finalized())

    async def _finalize_answered(self) -> None:
        """The provider answered its oldest pending finalize: acknowledge that request (and the
        free ones made after it), not the later ones still on their way."""
        if not self._finalize_groups:
            return  # an answer to a finalize already acknowledged (timed out, or released)
        count = self._finalize_groups.popleft()
        if self._finalize_groups:
            self._arm_finalize_timer()  # the next request waits for its own answer
        else:
            self._finalize_point = None
            self._cancel_finalize_timers()
        for _ in range(count):
            await self._emit(Finalized())

    async def _finalized(self) -> None:
        """The provider answered every pending finalize: emit the acknowledgements."""
        if self._finalize_groups:
            await self._release_finalizes(timed_out=False)

    async def _release_finalizes(self, *, timed_out: bool) -> None:
        count = sum(self._finalize_groups)
        self._finalize_groups.clear()
        self._finalize_point = None
        self._cancel_finalize_timers()
        if timed_out and count:
            await self._emit(ProviderWarning("finalize_timeout",
                                              "provider did not confirm finalize in time"))
        for _ in range(count):
            await self._emit(Finalized())

    def _cancel_finalize_timers(self) -> None:
        for timer in (self._finalize_timer, self._settle_timer):
            if timer is not None:
                timer.cancel()
        self._finalize_timer = self._settle_timer = None
