"""The Prosa front-end's stream decoder: containers sniffed from the first chunk, decoded as a
stream (WAV PCM parsed directly, compressed formats by PyAV in a thread)."""

from __future__ import annotations

import asyncio
import io
import wave

import numpy as np
import pytest

from app.audio import wav_bytes
from app.errors import GatewayError
from app.frontends.prosa_decode import StreamDecoder, parse_wav_header, sniff
from tests.frontends.conftest import encode
from tests.speech import pcm


async def decode(data: bytes, rate: int = 16000, chunk: int = 1001, **kwargs: object) -> bytes:
    out = bytearray()

    async def sink(pcm_bytes: bytes) -> None:
        out.extend(pcm_bytes)

    decoder = StreamDecoder(sink, rate, **kwargs)  # type: ignore[arg-type]
    try:
        for i in range(0, len(data), chunk):
            await decoder.feed(data[i:i + chunk])
        await decoder.end()
    finally:
        await decoder.aclose()
    return bytes(out)


def correlation(a: bytes, b: bytes) -> float:
    x, y = np.frombuffer(a, "<i2").astype(float), np.frombuffer(b, "<i2").astype(float)
    n = min(len(x), len(y))
    return float(np.corrcoef(x[:n], y[:n])[0, 1])


@pytest.mark.parametrize(("head", "declared", "kind"), [
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "", "wav"),
    (b"ID3\x04\x00", "", "mp3"),
    (b"OggS\x00\x02", "wav", "ogg"),  # the header wins over a wrong declaration
    (b"fLaC\x00\x00", "", "flac"),
    (b"\x1aE\xdf\xa3\x01", "wav", "matroska"),  # MediaRecorder webm sent as "wav"
    (b"\xff\xfb\x90\x00", "mp3", "mp3"),  # bare MPEG frames, declared
    (b"\xff\xfb\x90\x00", "", "raw"),  # the same bytes are also plausible PCM
    (b"\x01\x00\x02\x00", "wav", "raw"),  # headerless despite the declaration
])
def test_sniff(head: bytes, declared: str, kind: str) -> None:
    assert sniff(head, declared) == kind


def test_parse_wav_header() -> None:
    wav = wav_bytes(bytes(100), 22050)
    assert parse_wav_header(wav[:30]) is None  # header not complete yet
    fmt = parse_wav_header(wav)
    assert fmt is not None and fmt.is_pcm16 and fmt.rate == 22050 and fmt.channels == 1
    assert fmt.data_offset == 44 and fmt.data_size == 100
    streamed = wav[:40] + b"\xff\xff\xff\xff" + wav[44:]  # streamed WAV: unknown length
    assert parse_wav_header(streamed).data_size is None  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="before its fmt"):
        parse_wav_header(b"RIFF\x00\x00\x00\x00WAVEdata\x04\x00\x00\x00")


async def test_lossless_inputs_decode_exactly() -> None:
    speech = pcm("beckett.wav")
    assert await decode(speech) == speech  # raw PCM at the session rate
    assert await decode(wav_bytes(speech, 16000)) == speech
    flac = encode(speech, 16000, "flac", "flac")
    assert await decode(flac, chunk=4096) == speech


async def test_resampled_and_downmixed_inputs() -> None:
    speech = pcm("beckett.wav")
    r44 = np.frombuffer(pcm("beckett.wav", 44100), "<i2")
    stereo = np.stack([r44, r44], axis=1).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(stereo)
    out = await decode(buffer.getvalue())
    assert abs(len(out) - len(speech)) <= 64 and correlation(out, speech) > 0.98
    # 8 kHz raw PCM declared by the client, session at 8 kHz: passed through untouched.
    narrow = pcm("beckett.wav", 8000)
    assert await decode(narrow, rate=8000, declared_format="pcm") == narrow


async def test_compressed_and_float_inputs_through_pyav() -> None:
    speech = pcm("beckett.wav")
    energy = np.abs(np.frombuffer(speech, "<i2")).mean()
    float_wav = encode(speech, 16000, "wav", "pcm_f32le")  # not s16: PyAV decodes it
    assert correlation(await decode(float_wav, chunk=3000), speech) > 0.999
    for data in (encode(speech, 16000, "mp3", "libmp3lame"),
                 encode(pcm("beckett.wav", 48000), 48000, "ogg", "libopus")):
        out = await decode(data, chunk=3000)
        assert abs(len(out) - len(speech)) < 16000 * 2 * 0.1  # within 0.1 s (codec padding)
        assert 0.5 < np.abs(np.frombuffer(out, "<i2")).mean() / energy < 2


async def test_errors_name_the_cause() -> None:
    with pytest.raises(GatewayError, match="invalid audio: cannot decode ogg") as info:
        await decode(b"OggS" + bytes(range(256)) * 20)
    assert info.value.close_code == 4400
    with pytest.raises(GatewayError, match="WAV header without a data chunk"):
        await decode(wav_bytes(b"", 16000)[:36])


async def test_aclose_stops_a_decoder_waiting_for_more_input() -> None:
    got = asyncio.Event()

    async def sink(pcm_bytes: bytes) -> None:
        got.set()

    decoder = StreamDecoder(sink, 16000)
    mp3 = encode(pcm("beckett.wav"), 16000, "mp3", "libmp3lame")
    await decoder.feed(mp3[: len(mp3) // 2])  # the thread now blocks reading the rest
    await asyncio.wait_for(got.wait(), 10)
    await asyncio.wait_for(decoder.aclose(), 5)
    assert decoder._path is not None and decoder._path.done.done()  # type: ignore[union-attr]
