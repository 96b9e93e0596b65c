"""A scripted `Adapter` for testing the session core and `FallbackStream` in milliseconds.

Not a provider fake (those are in tests/fakes and speak the real protocols): this one plugs
into the registry (`Registry.register`) and does what its `Script` says, so every branch of
the core can be driven without a server.

Audio made by `blocks(n)` carries its block number in every sample (block *i* is 0.1 s of
the value i + 1); a segment's text names the blocks it heard (``"b1 b2 b3"``), so a test can
tell exactly which audio reached which model and that none was lost.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    Finalized,
    ModelInfo,
    ModelNotFound,
    ProviderError,
    ProviderUnavailable,
    StreamOptions,
    SttStream,
    Transcript,
)

RATE = 16000
BLOCK_SAMPLES = RATE // 10  # 0.1 s


def blocks(count: int, first: int = 0) -> bytes:
    """`count` blocks of 0.1 s, block i filled with the sample value i + 1."""
    return b"".join(np.full(BLOCK_SAMPLES, i + 1, dtype="<i2").tobytes()
                    for i in range(first, first + count))


def block_names(text: str) -> set[int]:
    """The block numbers a fake final names."""
    return {int(word[1:]) - 1 for word in text.split()}


@dataclass
class Script:
    """What a fake model does; positions are seconds of audio the stream received."""

    final_every: float = 1.0  # one final per this much audio
    partials: bool = True  # a partial after each chunk
    fail_start: ProviderError | None = None  # start() raises this
    fail_at: float | None = None  # the stream fails with `error` once it received this much
    error: ProviderError = field(default_factory=lambda: ProviderUnavailable(
        "fake upstream gone", provider="fake", retryable=True))
    block_send_at: float | None = None  # send_audio never returns from this position on...
    fail_while_blocked: float | None = None  # ...and the stream fails this long after (s)
    stall: bool = False  # answers nothing, ever (no results, no end)
    repeat_finals: bool = False  # every final is sent twice
    empty_finals: bool = False  # finals have no text
    ack_finalize: bool = True  # finalize is acknowledged with Finalized
    end_at: float | None = None  # ends the stream (cleanly) once it received this much
    ends_on_close: bool = True  # close_stream flushes and ends the stream
    shutdown_delay: float = 0.0  # aclose() takes this long (an end-of-stream handshake)


class FakeStream(SttStream):
    provider = "fake"

    def __init__(self, model: str, options: StreamOptions, script: Script) -> None:
        super().__init__(model, options)
        self.script = script
        self.received = bytearray()
        self.segment = 0
        self.segment_start = 0.0  # stream seconds
        self.pending = bytearray()
        self.finalizes = 0
        self.input_closed = False
        self.shut_down = False
        self.blocked = asyncio.Event()  # set while a send_audio is blocked

    @property
    def seconds(self) -> float:
        return len(self.received) / (2 * self.options.sample_rate)

    async def _start(self) -> None:
        if self.script.fail_start is not None:
            raise self.script.fail_start
        self.reader = self._spawn(self._read(), "reader")

    async def _read(self) -> None:
        """Like a provider socket's reader: runs until the stream is shut down."""
        await asyncio.Event().wait()

    async def _send_audio(self, pcm: bytes) -> None:
        script = self.script
        if script.block_send_at is not None and self.seconds >= script.block_send_at:
            self.blocked.set()
            if script.fail_while_blocked is not None:
                asyncio.get_running_loop().call_later(script.fail_while_blocked, self._fail,
                                                      script.error)
            await asyncio.Event().wait()  # forever (a dead upload worker)
        if script.fail_at is not None and self.seconds >= script.fail_at:
            self._fail(script.error)
            raise script.error
        self.received += pcm
        self.pending += pcm
        if script.stall:
            return
        while len(self.pending) >= self._segment_bytes:
            await self._final(self._segment_bytes)
        if self.pending and script.partials:
            await self._emit(self._transcript(bytes(self.pending), final=False))
        if script.end_at is not None and self.seconds >= script.end_at:
            self._finish()

    @property
    def _segment_bytes(self) -> int:
        return int(self.script.final_every * self.options.sample_rate) * 2

    def _transcript(self, pcm: bytes, *, final: bool) -> Transcript:
        values = sorted(set(np.frombuffer(pcm, dtype="<i2").tolist()) - {0})
        text = "" if final and self.script.empty_finals else " ".join(f"b{v}" for v in values)
        end = self.segment_start + len(pcm) / (2 * self.options.sample_rate)
        return Transcript(f"seg{self.segment}", final, text, round(self.segment_start, 3),
                          round(end, 3))

    async def _final(self, size: int) -> None:
        pcm = bytes(self.pending[:size])
        del self.pending[:size]
        event = self._transcript(pcm, final=True)
        await self._emit(event)
        if self.script.repeat_finals:
            await self._emit(event)
        self.segment += 1
        self.segment_start = event.end

    async def _finalize(self) -> None:
        self.finalizes += 1
        if self.script.stall:
            return
        if self.pending:
            await self._final(len(self.pending))
        if self.script.ack_finalize:
            await self._emit(Finalized())

    async def _close_stream(self) -> None:
        self.input_closed = True
        if self.script.stall or not self.script.ends_on_close:
            return
        if self.pending:
            await self._final(len(self.pending))
        self._finish()

    async def _shutdown(self) -> None:
        self.shut_down = True
        if self.script.shutdown_delay:
            await asyncio.sleep(self.script.shutdown_delay)


class FakeAdapter(Adapter):
    """Provider ``fake``; models by name, each with its `Script` (changeable between tests)."""

    provider = "fake"

    def __init__(self, scripts: dict[str, Script] | None = None, *,
                 caps: Capabilities | None = None) -> None:
        super().__init__(AdapterContext())
        self.scripts = scripts if scripts is not None else {"a": Script(), "b": Script()}
        self.caps = caps or Capabilities()
        self.streams: list[FakeStream] = []

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(f"fake.{name}", "fake", name, name, self.caps)
                for name in self.scripts]

    def open_stream(self, model: str, options: StreamOptions) -> SttStream:
        if model not in self.scripts:
            raise ModelNotFound(f"unknown model fake.{model}", provider="fake")
        stream = FakeStream(model, options, self.scripts[model])
        self.streams.append(stream)
        return stream

    def stream_of(self, model: str) -> FakeStream:
        """The last stream opened for `model`."""
        return [s for s in self.streams if s.model == model][-1]
