"""`SttStream.events()`: the one, bounded event path — order, end, errors, backpressure.

(Replaces the tests of the removed `deliver_to` direct path; the behaviour they asserted —
order, the end of the stream, nothing after the end — is asserted here of `events()`.)
"""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import (
    ProviderUnavailable,
    SpeechStarted,
    StreamOptions,
    SttStream,
    UtteranceEnd,
)


class ScriptedStream(SttStream):
    """Emits what the test tells it to; no upstream."""

    provider = "scripted"

    async def _start(self) -> None:
        pass

    async def _send_audio(self, pcm: bytes) -> None:
        pass

    async def _finalize(self) -> None:
        pass

    async def _close_stream(self) -> None:
        self._finish()

    async def _shutdown(self) -> None:
        pass


def make(queue_size: int = 256) -> ScriptedStream:
    return ScriptedStream("m", StreamOptions(sample_rate=16000), queue_size=queue_size)


async def test_events_in_order_then_the_end() -> None:
    stream = make()
    await stream._emit(SpeechStarted(0.1))
    await stream._emit(SpeechStarted(0.2))
    await stream._emit(UtteranceEnd(0.3))
    await stream.close_stream()
    assert [e async for e in stream.events()] == [SpeechStarted(0.1), SpeechStarted(0.2),
                                                  UtteranceEnd(0.3)]


async def test_an_error_comes_after_what_was_emitted_before_it() -> None:
    stream = make()
    await stream._emit(SpeechStarted(0.1))
    stream._fail(ProviderUnavailable("gone", provider="scripted"))
    seen = []
    with pytest.raises(ProviderUnavailable, match="gone"):
        async for event in stream.events():
            seen.append(event)
    assert seen == [SpeechStarted(0.1)]


async def test_nothing_is_delivered_after_the_end() -> None:
    stream = make()
    await stream.aclose()
    await stream._emit(SpeechStarted(1.0))
    assert [e async for e in stream.events()] == []


async def test_a_consumer_that_falls_behind_slows_the_producer() -> None:
    stream = make(queue_size=4)

    async def produce() -> None:
        for i in range(20):
            await stream._emit(SpeechStarted(float(i)))
        stream._finish()

    producer = asyncio.create_task(produce())
    done, _ = await asyncio.wait({producer}, timeout=0.2)
    assert not done and stream._events.qsize() == 4, "bounded: the producer waits"
    events = [e async for e in stream.events()]
    await producer
    assert events == [SpeechStarted(float(i)) for i in range(20)]


async def test_the_end_reaches_a_consumer_behind_a_full_queue() -> None:
    stream = make(queue_size=2)
    await stream._emit(SpeechStarted(0.0))
    await stream._emit(SpeechStarted(1.0))
    stream._fail(ProviderUnavailable("gone", provider="scripted"))  # queue full: deferred
    seen = []
    with pytest.raises(ProviderUnavailable):
        async for event in stream.events():
            seen.append(event)
    assert seen == [SpeechStarted(0.0), SpeechStarted(1.0)]
    await stream.aclose()
