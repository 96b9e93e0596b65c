"""Decode a stream of audio bytes that may start with a container header, as it arrives.

Used by the Prosa front-end (its first chunk may carry a WAV, MP3 or OGG header): WAV PCM is
parsed here directly; other containers are decoded by PyAV in a worker thread fed through a
bounded pipe, so a slow consumer pushes back on the producer instead of buffering without limit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.audio import Resampler
from app.errors import GatewayError
from app.frontends.sniff import frame_stream, not_audio

logger = logging.getLogger(__name__)

SNIFF_BYTES = 12
WAV_MAX_HEADER = 64 * 1024
PIPE_LIMIT = 1024 * 1024  # encoded bytes buffered ahead of the decoder thread
# Magic numbers of the containers a first chunk may start with -> PyAV demuxer name.
CONTAINER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"ID3", "mp3"), (b"OggS", "ogg"), (b"fLaC", "flac"), (b"\x1aE\xdf\xa3", "matroska"))
# Declared `audio.format` values whose streams may lack a magic number.
DECLARED_CONTAINERS = {"mp3": "mp3", "aac": "aac", "ogg": "ogg", "opus": "ogg",
                       "flac": "flac", "webm": "matroska"}
Sink = Callable[[bytes], Coroutine[Any, Any, None]]


def sniff(head: bytes, declared: str) -> str:
    """``"wav"``, a PyAV demuxer name, or ``"raw"`` (headerless s16le PCM)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    for magic, fmt in CONTAINER_MAGIC:
        if head.startswith(magic):
            return fmt
    # An MPEG frame sync (0xFFE) is also what negative PCM samples look like: trust it here
    # only when the client said mp3 (`StreamDecoder` also checks for a chain of frames).
    if declared in DECLARED_CONTAINERS:
        return DECLARED_CONTAINERS[declared]
    return "raw"


@dataclass(frozen=True, slots=True)
class WavFormat:
    tag: int  # 1 = PCM, 3 = float, 0xFFFE = extensible (sub-format in `subtag`)
    channels: int
    rate: int
    bits: int
    data_offset: int
    data_size: int | None  # None = unknown (streamed WAV with a 0 or 0xFFFFFFFF size)

    @property
    def is_pcm16(self) -> bool:
        return self.tag == 1 and self.bits == 16


def parse_wav_header(buf: bytes) -> WavFormat | None:
    """The format and data offset of a WAV stream, or None while the header is incomplete."""
    pos, fmt = 12, None
    while pos + 8 <= len(buf):
        chunk, size = buf[pos:pos + 4], int.from_bytes(buf[pos + 4:pos + 8], "little")
        if chunk == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk before its fmt chunk")
            tag, channels, rate, bits = fmt
            return WavFormat(tag, channels, rate, bits, pos + 8,
                             None if size in (0, 0xFFFFFFFF) else size)
        if pos + 8 + size > len(buf):
            return None
        if chunk == b"fmt ":
            body = buf[pos + 8:pos + 8 + size]
            if len(body) < 16:
                raise ValueError("WAV fmt chunk too short")
            tag = int.from_bytes(body[0:2], "little")
            if tag == 0xFFFE and len(body) >= 26:
                tag = int.from_bytes(body[24:26], "little")  # WAVE_FORMAT_EXTENSIBLE sub-format
            fmt = (tag, int.from_bytes(body[2:4], "little"), int.from_bytes(body[4:8], "little"),
                   int.from_bytes(body[14:16], "little"))
        pos += 8 + size + (size & 1)
    return None


class _PcmPath:
    """Interleaved s16le at `in_rate` -> mono s16le at `out_rate`."""

    def __init__(self, in_rate: int, out_rate: int, channels: int,
                 limit: int | None = None) -> None:
        self.channels = channels
        self.resampler = Resampler(in_rate, out_rate)
        self.remaining = limit
        self.carry = b""

    def process(self, data: bytes, last: bool = False) -> bytes:
        if self.remaining is not None:
            data = data[:self.remaining]
            self.remaining -= len(data)
        data = self.carry + data
        frame = 2 * self.channels
        cut = len(data) - len(data) % frame
        data, self.carry = data[:cut], data[cut:]
        if self.channels > 1 and data:
            samples = np.frombuffer(data, dtype="<i2").reshape(-1, self.channels)
            data = samples.mean(axis=1).astype("<i2").tobytes()
        return self.resampler.process(data, last=last)


class _BlockingPipe:
    """Bytes from the event loop to PyAV's decoder thread; `read` blocks until data or EOF."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._cv = threading.Condition()
        self._eof = False

    def write(self, data: bytes) -> None:
        with self._cv:
            self._buf += data
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def abort(self) -> None:
        with self._cv:
            self._eof = True
            self._buf.clear()
            self._cv.notify_all()

    def read(self, size: int = -1) -> bytes:
        with self._cv:
            while not self._buf and not self._eof:
                self._cv.wait()
            size = len(self._buf) if size < 0 else size
            out = bytes(self._buf[:size])
            del self._buf[:size]
            self._cv.notify_all()
            return out

    def wait_below(self, limit: int) -> None:
        with self._cv:
            while len(self._buf) > limit and not self._eof:
                self._cv.wait()

    def __len__(self) -> int:
        return len(self._buf)


class _ContainerPath:
    """A compressed stream decoded by PyAV in a worker thread, fed through a blocking pipe."""

    def __init__(self, fmt: str, rate: int, sink: Sink) -> None:
        self.fmt = fmt
        self.rate = rate
        self.sink = sink
        self.pipe = _BlockingPipe()
        self.loop = asyncio.get_running_loop()
        self.aborted = False
        self._delivery: concurrent.futures.Future[None] | None = None
        self.done = self.loop.run_in_executor(None, self._decode)

    async def feed(self, data: bytes) -> None:
        if self.done.done():
            await self.done  # raises the decoding error, if that is why it stopped
            return
        self.pipe.write(data)
        if len(self.pipe) > PIPE_LIMIT:  # backpressure: wait for the decoder to catch up
            await asyncio.to_thread(self.pipe.wait_below, PIPE_LIMIT)

    async def end(self) -> None:
        self.pipe.close()
        await self.done

    def abort(self) -> None:
        self.aborted = True
        self.pipe.abort()
        if self._delivery is not None:
            self._delivery.cancel()

    def _decode(self) -> None:
        import av

        try:
            # A named format and a small probe: decoding starts with the first frames instead
            # of waiting for megabytes of probe data.
            with av.open(self.pipe, mode="r", format=self.fmt,
                         options={"probesize": "4096", "analyzeduration": "0"}) as container:
                if not container.streams.audio:
                    raise ValueError("no audio stream")
                resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
                for frame in container.decode(container.streams.audio[0]):
                    for out in resampler.resample(frame):
                        self._deliver(out.to_ndarray().astype("<i2", copy=False).tobytes())
                for out in resampler.resample(None):
                    self._deliver(out.to_ndarray().astype("<i2", copy=False).tobytes())
        except av.FFmpegError as exc:
            if not self.aborted:
                raise ValueError(f"cannot decode {self.fmt} audio: {exc}") from exc

    def _deliver(self, pcm: bytes) -> None:
        if self.aborted:
            raise concurrent.futures.CancelledError()
        self._delivery = asyncio.run_coroutine_threadsafe(self.sink(pcm), self.loop)
        self._delivery.result()


class StreamDecoder:
    """The client's audio stream -> s16le mono PCM at `rate`, handed to `sink` in order.

    The stream is raw PCM (s16le, `channels` interleaved, at `rate`), or a WAV/MP3/OGG/FLAC/
    WebM stream whose header is in the first chunk. WAV PCM is parsed here; compressed
    formats are decoded as a stream by PyAV in a worker thread.
    """

    def __init__(self, sink: Sink, rate: int, *, declared_format: str = "",
                 channels: int = 1) -> None:
        self.sink = sink
        self.rate = rate
        self.declared = declared_format
        self.channels = channels
        self._head = b""  # first bytes, until the format is known
        self._path: _PcmPath | _ContainerPath | None = None

    async def feed(self, data: bytes) -> None:
        if self._path is None:
            self._head += data
            if not self._choose(final=False):
                return
            data, self._head = self._head, b""
        await self._push(data)

    async def end(self) -> None:
        if self._path is None:
            self._choose(final=True)
            data, self._head = self._head, b""
            await self._push(data)
        try:
            if isinstance(self._path, _ContainerPath):
                await self._path.end()
            elif self._path is not None:
                await self._push(b"", last=True)
        except ValueError as exc:
            raise GatewayError(4400, f"invalid audio: {exc}", code="invalid_audio") from None

    async def aclose(self) -> None:
        if isinstance(self._path, _ContainerPath):
            self._path.abort()
            # Waits for the decoder thread to stop (bounded) without raising its outcome, so
            # our own cancellation still propagates.
            await asyncio.wait({self._path.done}, timeout=5)

    def _choose(self, final: bool) -> bool:
        """Pick the decoding path once enough of the first bytes are here."""
        if len(self._head) < SNIFF_BYTES and not final:
            return False
        kind = sniff(self._head, self.declared)
        if kind == "raw":
            kind = self._headerless(final)
            if kind == "more":
                return False
        if kind == "wav":
            try:
                wav = parse_wav_header(self._head)
            except ValueError as exc:
                raise GatewayError(4400, f"invalid audio: {exc}", code="invalid_audio") from None
            if wav is None:
                if len(self._head) > WAV_MAX_HEADER or final:
                    raise GatewayError(4400, "invalid audio: WAV header without a data chunk",
                                       code="invalid_audio")
                return False
            if wav.is_pcm16 and 1 <= wav.channels <= 8 and wav.rate > 0:
                self._head = self._head[wav.data_offset:]
                self._path = _PcmPath(wav.rate, self.rate, wav.channels, wav.data_size)
                return True  # float, 24-bit, mu-law... WAV: PyAV decodes it below
        if kind == "raw":
            self._path = _PcmPath(self.rate, self.rate, self.channels)
        else:
            self._path = _ContainerPath(kind, self.rate, self.sink)
        return True

    def _headerless(self, final: bool) -> str:
        """No magic number: a bare MP3/ADTS frame chain, raw PCM, or something else."""
        frames = frame_stream(self._head, final)
        if frames is not None:
            return frames
        what = not_audio(self._head)
        if what is not None:
            raise GatewayError(4400, f"invalid audio: the stream starts like {what}; send "
                                     "16-bit PCM or a WAV, MP3, AAC, OGG, FLAC or WebM stream",
                               code="invalid_audio")
        return "raw"

    async def _push(self, data: bytes, last: bool = False) -> None:
        if isinstance(self._path, _ContainerPath):
            if data:
                try:
                    await self._path.feed(data)
                except ValueError as exc:
                    raise GatewayError(4400, f"invalid audio: {exc}",
                                       code="invalid_audio") from None
        elif self._path is not None:
            pcm = self._path.process(data, last=last)
            if pcm:
                await self.sink(pcm)
