"""Audio utilities: streaming resampling of s16le PCM and decoding files of any container."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np
import soxr

BYTES_PER_SAMPLE = 2


class PcmFramer:
    """Keeps an odd trailing byte for the next frame, so no sample is ever split or lost."""

    def __init__(self) -> None:
        self._carry = b""

    def push(self, data: bytes) -> bytes:
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if len(data) % BYTES_PER_SAMPLE:
            self._carry = data[-1:]
            data = data[:-1]
        return data

    @property
    def pending(self) -> int:
        return len(self._carry)


class Resampler:
    """Streaming s16le mono resampler (soxr); a pass-through when the rates match."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
                        if in_rate != out_rate else None)

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples, last=last)
        return bytes(out.astype("<i2", copy=False).tobytes())

    def flush(self) -> bytes:
        return self.process(b"", last=True)


@dataclass(frozen=True, slots=True)
class DecodedChunk:
    pcm: bytes
    position: float  # seconds decoded so far
    duration: float | None  # total, when the container says


def decode_audio(source: str | bytes | io.IOBase | IO[bytes], rate: int = 16000,
                 chunk_seconds: float = 0.1) -> Iterator[DecodedChunk]:
    """Decode any audio file PyAV can read to s16le mono PCM at `rate`, in chunks.

    A generator: it decodes only as far as it is read, so a caller bounds the work (and the
    memory) by how many chunks it takes; each chunk carries the duration the container
    declares, when it declares one, to refuse a file before decoding it. Raises ``ValueError``
    naming the cause when the input is not decodable audio.
    """
    import av

    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        container = av.open(source, mode="r")
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode audio: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise ValueError("no audio stream in the file")
        stream = container.streams.audio[0]
        duration: float | None = None
        if stream.duration and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        chunk_bytes = int(rate * chunk_seconds) * BYTES_PER_SAMPLE
        buffer = bytearray()
        produced = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    buffer += out.to_ndarray().astype("<i2", copy=False).tobytes()
                while len(buffer) >= chunk_bytes:
                    produced += chunk_bytes
                    yield DecodedChunk(bytes(buffer[:chunk_bytes]),
                                       produced / (BYTES_PER_SAMPLE * rate), duration)
                    del buffer[:chunk_bytes]
            for out in resampler.resample(None):
                buffer += out.to_ndarray().astype("<i2", copy=False).tobytes()
        except av.FFmpegError as exc:
            raise ValueError(f"cannot decode audio: {exc}") from exc
        if buffer:
            produced += len(buffer)
            yield DecodedChunk(bytes(buffer), produced / (BYTES_PER_SAMPLE * rate), duration)


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """Wrap s16le mono PCM in a WAV container."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(BYTES_PER_SAMPLE)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()
