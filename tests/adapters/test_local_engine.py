"""`LocalEngine`, the object every local stream decodes through: its settings, its slots and
its pool, without a model (fast tier)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from adapters.base import AdapterContext, StreamOptions
from adapters.local.adapter import LocalAdapter
from adapters.local.engine import FINAL, LocalEngine
from adapters.local.models import LoadOptions
from config import LocalEngineSettings


def test_the_engine_is_built_from_its_settings() -> None:
    engine = LocalEngine(LocalEngineSettings(compute_type="float32", cpu_threads=4,
                                             decode_workers=3))
    try:
        assert engine.load_options == LoadOptions("float32", 4, 3)
    finally:
        engine.close()
    # Nonsense counts still give a working engine: one thread, one slot.
    engine = LocalEngine(LocalEngineSettings(cpu_threads=0, decode_workers=0))
    try:
        assert engine.load_options == LoadOptions("int8", 1, 1)
        assert engine.try_acquire() and not engine.try_acquire()
    finally:
        engine.close()


def test_streams_get_the_engine_and_not_the_adapter() -> None:
    adapter = LocalAdapter(AdapterContext(local=LocalEngineSettings(decode_workers=1)))
    try:
        stream = adapter.open_stream("tiny.en", StreamOptions())
        assert stream._engine is adapter.engine
        assert stream.model == "tiny.en"
        assert not any(isinstance(value, LocalAdapter) for value in vars(stream).values())
    finally:
        adapter.engine.close()


async def test_a_slot_is_held_until_the_decode_thread_is_done_even_if_cancelled() -> None:
    engine = LocalEngine(LocalEngineSettings(decode_workers=1))
    started, finish = threading.Event(), threading.Event()

    def decode() -> str:
        started.set()
        finish.wait(10)
        return "text"

    try:
        await engine.acquire(engine.ticket(FINAL))
        task = asyncio.create_task(engine.decode_in_slot(decode, final=True))
        await asyncio.to_thread(started.wait, 10)
        assert engine.other_finals() == 1  # a final is decoding
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The thread still runs: its slot is not free yet.
        assert not engine.try_acquire() and engine.other_finals() == 1
        released = asyncio.create_task(engine.wait_released())
        await asyncio.sleep(0)
        finish.set()
        await asyncio.wait_for(released, 10)
        assert engine.other_finals() == 0
        assert engine.try_acquire()
        engine.release()
    finally:
        finish.set()
        engine.close()


async def test_later_partials_leave_a_slot_for_finals() -> None:
    engine = LocalEngine(LocalEngineSettings(decode_workers=2))
    started, finish = threading.Event(), threading.Event()

    def decode() -> None:
        started.set()
        finish.wait(10)

    try:
        assert engine.try_acquire_for_partial()
        assert not engine.try_acquire_for_partial()  # the last slot is kept for a final
        assert engine.try_acquire()  # which a final (or a speculative final) may take
        engine.release()
        engine.release()
        # While a final decodes, no later partial starts, though a slot is free.
        await engine.acquire(engine.ticket(FINAL))
        final = asyncio.create_task(engine.decode_in_slot(decode, final=True))
        await asyncio.to_thread(started.wait, 10)
        assert not engine.try_acquire_for_partial()
        finish.set()
        await asyncio.wait_for(final, 10)
        await asyncio.sleep(0)  # the slot is released on the loop once the thread is done
        assert engine.other_finals() == 0
        assert engine.try_acquire_for_partial()
        engine.release()
    finally:
        finish.set()
        engine.close()


async def test_a_decode_refused_by_a_closed_pool_gives_its_slot_back() -> None:
    engine = LocalEngine(LocalEngineSettings(decode_workers=1))
    await engine.acquire(engine.ticket(FINAL))
    engine.close()
    with pytest.raises(RuntimeError):
        await engine.decode_in_slot(lambda: None)
    assert engine.try_acquire()
