"""`SttStream.deliver_to`: the session's direct event path keeps order and still ends the stream."""

from __future__ import annotations

import pytest

from adapters.base import (
    ProviderUnavailable,
    SpeechStarted,
    StreamEvent,
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


def make() -> ScriptedStream:
    return ScriptedStream("m", StreamOptions(sample_rate=16000))


async def test_queued_events_go_first_then_direct_ones_in_order() -> None:
    stream = make()
    await stream._emit(SpeechStarted(0.1))
    await stream._emit(SpeechStarted(0.2))
    seen: list[StreamEvent] = []
    stream.deliver_to(seen.append)
    assert seen == [SpeechStarted(0.1), SpeechStarted(0.2)]
    await stream._emit(UtteranceEnd(0.3))
    assert seen[-1] == UtteranceEnd(0.3)
    await stream.close_stream()
    assert [e async for e in stream.events()] == []  # only the end is left to iterate
    assert len(seen) == 3


async def test_an_error_queued_before_delivery_still_ends_the_stream() -> None:
    stream = make()
    await stream._emit(SpeechStarted(0.1))
    stream._fail(ProviderUnavailable("gone", provider="scripted"))
    seen: list[StreamEvent] = []
    stream.deliver_to(seen.append)
    assert seen == [SpeechStarted(0.1)]
    with pytest.raises(ProviderUnavailable, match="gone"):
        async for _ in stream.events():
            pass


async def test_nothing_is_delivered_after_the_end() -> None:
    stream = make()
    seen: list[StreamEvent] = []
    stream.deliver_to(seen.append)
    await stream.aclose()
    await stream._emit(SpeechStarted(1.0))
    assert seen == []
