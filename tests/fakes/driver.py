"""Drive an `SttStream` like the session core does, and judge what it emits."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TypeVar

import pytest

from adapters.base import Finalized, StreamEvent, SttStream, Transcript


def frames(pcm: bytes, rate: int = 16000, frame_ms: int = 100) -> list[bytes]:
    size = rate * 2 * frame_ms // 1000
    return [pcm[i:i + size] for i in range(0, len(pcm), size)]


async def collect(stream: SttStream, into: list[StreamEvent]) -> None:
    async for event in stream.events():
        into.append(event)


E = TypeVar("E", bound=BaseException)


async def error_of(stream: SttStream, kind: type[E], within: float = 10.0) -> E:
    """Drain `stream`'s events: the `kind` error that ends them (within `within` s); anything
    else, a clean end included, fails the test."""
    with pytest.raises(kind) as err:
        async with asyncio.timeout(within):
            async for _ in stream.events():
                pass
    return err.value


async def run(stream: SttStream, pcm: bytes, *, rate: int = 16000, frame_ms: int = 100,
              realtime: bool = False, finalize_after: int | None = None,
              pause_after: int | None = None, pause: float = 0.0,
              within: float = 60.0) -> list[StreamEvent]:
    """Start, send `pcm` in frames (optionally at real-time pace), close, collect all events.

    `finalize_after`: call `finalize()` after that many frames. `pause_after`: the client is
    silent for `pause` seconds after that many frames. Raises the `ProviderError` that ended
    the stream, if any.
    """
    events: list[StreamEvent] = []
    reader: asyncio.Task[None] | None = None
    async with asyncio.timeout(within):
        await stream.start()
        try:
            reader = asyncio.create_task(collect(stream, events))
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i, frame in enumerate(frames(pcm, rate, frame_ms)):
                if realtime:
                    await asyncio.sleep(max(0.0, t0 + i * frame_ms / 1000 - loop.time()))
                await stream.send_audio(frame)
                if finalize_after is not None and i + 1 == finalize_after:
                    await stream.finalize()
                if pause_after is not None and i + 1 == pause_after:
                    await asyncio.sleep(pause)
                if reader.done():
                    break
            if not reader.done():
                await stream.close_stream()
            await reader
        finally:
            await stream.aclose()
            if reader is not None:  # e.g. send_audio raised the error that ended the stream
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
    return events


def finals(events: list[StreamEvent]) -> list[Transcript]:
    return [e for e in events if isinstance(e, Transcript) and e.is_final]


def final_text(events: list[StreamEvent]) -> str:
    return " ".join(t.text for t in finals(events) if t.text)


def check_segments(events: list[StreamEvent]) -> None:
    """Partials precede their final with the same id; each id is finalized exactly once."""
    done: set[str] = set()
    for event in events:
        if not isinstance(event, Transcript):
            continue
        assert event.segment_id not in done, f"{event.segment_id} after its final: {event}"
        if event.is_final:
            done.add(event.segment_id)
        assert event.start <= event.end + 1e-6, event
        for word in event.words:
            assert word.start <= word.end + 1e-6, word


def finalized_after_finals(events: list[StreamEvent]) -> int:
    """Index of the first `Finalized`; asserts a final came before it."""
    index = next(i for i, e in enumerate(events) if isinstance(e, Finalized))
    assert any(isinstance(e, Transcript) and e.is_final for e in events[:index])
    return index
