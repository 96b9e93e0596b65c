"""Keepalive and finalize plumbing shared by the WebSocket adapters that stream raw audio.

`KeepaliveStream`: providers that close a stream idle for a while (Deepgram, Deepgram Flux,
Soniox, ElevenLabs) get one keepalive (a message, or digital silence) whenever nothing was
sent for ``keepalive_interval`` seconds (``AdapterContext.keepalive_interval``, else the
provider's `keepalive_default`) while the client's audio is open.

`FinalizeMessageStream`: providers that take raw PCM frames and answer a finalize message
(Deepgram ``Finalize``, Soniox ``finalize``) with the finals of everything sent so far; with
nothing sent since the last one, a finalize only flushes what the segmenter holds.
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from typing import Any, ClassVar, Protocol

from adapters._ws import WebSocketStream
from adapters.base import AdapterContext, StreamEvent, StreamOptions


class KeepaliveStream(WebSocketStream):
    """A WebSocket stream kept alive by `_send_keepalive` while the client is silent."""

    # Seconds without sending after which a keepalive goes out (provider default).
    keepalive_default: ClassVar[float]

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext) -> None:
        super().__init__(model, options, context)
        self.keepalive_interval = context.keepalive_interval or self.keepalive_default
        self._last_sent = 0.0

    @abstractmethod
    async def _send_keepalive(self) -> None:
        """Send one keepalive (a message, or silence the provider transcribes as nothing)."""

    def _sent(self) -> None:
        """Something just went upstream: the keepalive waits a full interval again."""
        self._last_sent = time.monotonic()

    def _start_keepalive(self) -> None:
        self._sent()
        self._spawn(self._keepalive(), "keepalive")

    async def _keepalive(self) -> None:
        while not self._input_closed:
            idle = time.monotonic() - self._last_sent
            if idle >= self.keepalive_interval:
                await self._send_keepalive()
                self._sent()
                idle = 0.0
            await asyncio.sleep(self.keepalive_interval - idle)


class Flushable(Protocol):
    def flush(self) -> list[StreamEvent]:
        """The events of everything held (the open segment turns final)."""


class FinalizeMessageStream(KeepaliveStream):
    """Raw PCM frames upstream; a finalize is `finalize_message`, answered by the finals."""

    # The provider's finalize message.
    finalize_message: ClassVar[dict[str, Any]]
    _segmenter: Flushable

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext) -> None:
        super().__init__(model, options, context)
        self._buffered = False  # audio sent since the last finalize

    async def _send_audio(self, pcm: bytes) -> None:
        if pcm:  # an empty binary frame would end the stream upstream
            await self._send(pcm)
            self._last_sent = time.monotonic()  # `_sent`, inlined (the relay's hot path)
            self._buffered = True

    async def _flush_segmenter(self) -> None:
        for event in self._segmenter.flush():
            await self._emit(event)

    async def _finalize(self) -> None:
        if not self._buffered:
            await self._flush_segmenter()
            await self._free_finalize()
            return
        self._buffered = False
        self._expect_finalized()
        await self._send_json(self.finalize_message)
        self._sent()
