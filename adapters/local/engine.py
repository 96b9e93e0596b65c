"""The local engine's shared decode machinery: `LocalEngine` (model, scheduler, pool).

One `LocalEngine` per `LocalAdapter`; every `LocalStream` of that adapter receives it and
decodes through it, never through the adapter. It owns:

* the model instances (`adapters.local.models.shared_model`: one per process, loaded in a
  worker thread on first use);
* `DecodeScheduler`, which hands out the decode pool's slots: finals before partials;
* the decode thread pool (``decode_workers`` threads; no decode ever runs on the loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from adapters.base import ProviderUnavailable
from adapters.local.models import LoadOptions, Weights, shared_model
from config.settings import LocalEngineSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

PROVIDER = "local"

FINAL = 0  # an utterance's final
FIRST_PARTIAL = 1  # the first partial of an utterance (time to first text)
PARTIAL = 2  # later partials: only taken when a slot is free (`try_acquire`)


@dataclass(eq=False)
class Ticket:
    """A request for a decode slot. Its priority may be raised while it waits."""

    priority: int
    seq: int
    future: asyncio.Future[None] = field(repr=False)


class DecodeScheduler:
    """Slots of the decode pool, granted by priority (finals first), then oldest first.

    A stream waiting to decode a partial raises its ticket to `FINAL` when a final becomes
    due. Later partials never queue: a stream takes a slot only if one is free
    (`try_acquire`), else it skips and tries again with newer audio when a slot is released
    (`wait_released`), so partials that could not run while the pool was busy merge into
    one and the pool's backlog is only ever finals and first partials. With two or more
    slots, later partials leave one slot free, so a final rarely waits for a partial.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = slots
        self._waiting: list[Ticket] = []
        self._seq = itertools.count()
        self._release_waiters: list[asyncio.Future[None]] = []

    @property
    def busy(self) -> bool:
        return self._free == 0

    def ticket(self, priority: int) -> Ticket:
        return Ticket(priority, next(self._seq), asyncio.get_running_loop().create_future())

    async def acquire(self, ticket: Ticket) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        self._waiting.append(ticket)
        try:
            await ticket.future
        except asyncio.CancelledError:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            elif ticket.future.done() and not ticket.future.cancelled():
                self.release()  # granted just as we were cancelled: pass the slot on
            raise

    def waiting(self, priority: int) -> int:
        """How many requests of `priority` (or better) wait for a slot."""
        return sum(t.priority <= priority for t in self._waiting)

    def try_acquire(self, reserve: int = 0) -> bool:
        """Take a slot if more than `reserve` are free and nobody is waiting for one."""
        if self._free > reserve and not self._waiting:
            self._free -= 1
            return True
        return False

    async def wait_released(self) -> None:
        """Wait for the next `release`."""
        future = asyncio.get_running_loop().create_future()
        self._release_waiters.append(future)
        try:
            await future
        finally:
            if future in self._release_waiters:
                self._release_waiters.remove(future)

    def release(self) -> None:
        waiters, self._release_waiters = self._release_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)
        while self._waiting:
            best = min(self._waiting, key=lambda t: (t.priority, t.seq))
            self._waiting.remove(best)
            if not best.future.done():
                best.future.set_result(None)
                return
        self._free += 1


class LocalEngine:
    """Loads models and runs decodes for the streams of one adapter (see the module doc).

    A decode takes a slot first (`acquire` with a `ticket`, or `try_acquire` /
    `try_acquire_for_partial`), then runs in the pool with `decode_in_slot`, which frees the
    slot when the thread is done; a slot taken but not used is given back with `release`.
    """

    def __init__(self, settings: LocalEngineSettings) -> None:
        workers = max(1, settings.decode_workers)
        self.load_options = LoadOptions(compute_type=settings.compute_type,
                                        cpu_threads=max(1, settings.cpu_threads),
                                        workers=workers)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "local-decode")
        self._scheduler = DecodeScheduler(workers)
        self._finals_in_flight = 0

    async def load(self, weights: Weights) -> Any:
        """The shared model instance, loaded in a worker thread on first use."""
        try:
            return await asyncio.to_thread(shared_model, weights, self.load_options)
        except Exception as exc:  # noqa: BLE001 - a broken model dir or failed download
            logger.error("local.%s: cannot load (%s): %s", weights.name, weights.source, exc)
            raise ProviderUnavailable(
                f"cannot load local.{weights.name} from {weights.source}: {exc}",
                provider=PROVIDER) from exc

    # ---- slots ------------------------------------------------------------------------------

    def ticket(self, priority: int) -> Ticket:
        """A request for a decode slot (`FINAL` or `FIRST_PARTIAL` priority)."""
        return self._scheduler.ticket(priority)

    async def acquire(self, ticket: Ticket) -> None:
        await self._scheduler.acquire(ticket)

    def try_acquire(self) -> bool:
        """A free slot now, or False (nothing waits)."""
        return self._scheduler.try_acquire()

    def try_acquire_for_partial(self) -> bool:
        """A slot for a later partial: only while no final is decoding or waiting (the
        threads share the CPU, so a partial next to a final slows the final down), and
        leaving one slot free for the next final."""
        if self.other_finals():
            return False
        return self._scheduler.try_acquire(reserve=1 if self._scheduler.slots > 1 else 0)

    def other_finals(self) -> int:
        """Finals decoding or waiting for a slot (call while holding the slot for ours)."""
        return self._finals_in_flight + self._scheduler.waiting(FINAL)

    async def wait_released(self) -> None:
        await self._scheduler.wait_released()

    def release(self) -> None:
        self._scheduler.release()

    # ---- decoding ---------------------------------------------------------------------------

    async def decode_in_slot(self, fn: Callable[[], T], *, final: bool = False) -> T:
        """Run `fn` in the pool on a slot already acquired; the slot is freed when the
        thread is really done, even if our await is cancelled."""
        loop = asyncio.get_running_loop()
        try:
            future = self._pool.submit(fn)
        except BaseException:
            self._scheduler.release()
            raise
        self._finals_in_flight += final

        def released() -> None:
            self._finals_in_flight -= final
            self._scheduler.release()

        def done(_: object) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(released)

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop the pool: queued decodes are dropped, running ones finish in their thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)
