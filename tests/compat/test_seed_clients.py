"""The seed services' clients as their docs show them: Prosa's example streaming a bare MP3 (no
ID3 tag: it starts with a frame sync) with no ``audio`` block; ADTS AAC likewise; and bytes that
are not audio at all get an error naming what they look like."""

from __future__ import annotations

import numpy as np
import pytest

from app.frontends.sniff import adts_frame, frame_stream, mpeg_frame, not_audio
from tests.frontends.conftest import encode
from tests.frontends.test_prosa import prosa_session, results_text
from tests.frontends.test_prosa_audio import decode
from tests.servers import Gateway
from tests.speech import BECKETT_TEXT, pcm, wer

SPEECH = pcm("beckett.wav")
CONFIG = {"label": "Streaming Test", "model": "stt-general-online", "include_partial": False}


def bare_mp3() -> bytes:
    """An MP3 file with its ID3v2 tag cut off, as many encoders and the Prosa docs' file."""
    mp3 = encode(SPEECH, 16000, "mp3", "libmp3lame")
    if mp3.startswith(b"ID3"):
        size = int.from_bytes(bytes(b & 0x7F for b in mp3[6:10]), "big")
        mp3 = mp3[10 + size:]
    assert mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0, "starts with a frame sync"
    return mp3


def test_frame_chains_are_told_from_pcm() -> None:
    mp3 = bare_mp3()
    assert mpeg_frame(mp3) is not None
    assert frame_stream(mp3[:12], final=False) == "more"
    assert frame_stream(mp3[:4096], final=False) == "mp3"
    aac = encode(SPEECH, 16000, "adts", "aac")
    assert adts_frame(aac) is not None and frame_stream(aac[:4096], final=False) == "aac"
    # real speech PCM, at every offset where it happens to contain a frame-sync-like pair
    rng = np.random.default_rng(7)
    noise = (rng.normal(0, 8000, 200_000)).astype("<i2").tobytes()
    for data in (SPEECH, noise):
        syncs = [i for i in range(0, len(data) - 8192, 2)
                 if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0]
        assert syncs, "the test needs PCM that looks like a frame sync somewhere"
        assert all(frame_stream(data[i:i + 8192], final=False) is None for i in syncs)


@pytest.mark.parametrize(("head", "what"), [
    (b'{"type": "audio", "data": "..."}', "JSON"), (b"hello, this is not audio at all", "text"),
    (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "MP4"), (b"\x89PNG\r\n\x1a\n", "PNG")])
def test_not_audio_is_named(head: bytes, what: str) -> None:
    named = not_audio(head)
    assert named is not None and what in named
    assert not_audio(SPEECH[:256]) is None


async def test_decoder_takes_bare_mp3_and_aac_without_a_declared_format() -> None:
    for data in (bare_mp3(), encode(SPEECH, 16000, "adts", "aac")):
        out = await decode(data, chunk=1000)
        assert abs(len(out) - len(SPEECH)) < 16000 * 2 * 0.2  # about the same duration


async def test_prosa_docs_client_with_a_bare_mp3(gateway: Gateway) -> None:
    messages, code = await prosa_session(gateway, bare_mp3(), CONFIG)
    assert code == 1000, messages
    assert wer(BECKETT_TEXT, results_text(messages)) <= 0.2, results_text(messages)


async def test_prosa_text_instead_of_audio_is_an_error(gateway: Gateway) -> None:
    messages, code = await prosa_session(gateway, b"this is a text file, not audio\n" * 200,
                                         CONFIG)
    assert code == 4400
    assert any("not audio" in str(m) for m in messages), messages


async def test_xrx_client_streaming_100_ms_frames_without_a_flag(gateway: Gateway) -> None:
    """An xrx client that streams 100 ms frames at real-time pace (no ?mode=): transcripts
    come back on the pauses while the connection stays open, not "Thank you." per frame."""
    import asyncio

    import websockets

    speech = SPEECH + bytes(16000 * 2 * 3 // 2)  # and 1.5 s of silence after the reading
    texts: list[str] = []
    last_words = asyncio.Event()
    async with websockets.connect(f"{gateway.ws_url}/api/v1/ws",
                                  additional_headers={"X-API-Key": gateway.dev_key}) as ws:
        async def collect() -> None:
            async for message in ws:
                assert isinstance(message, str)
                texts.append(message)
                if "better" in message.lower():
                    last_words.set()

        reader = asyncio.create_task(collect())
        for i in range(0, len(speech), 3200):
            await ws.send(speech[i:i + 3200])
            await asyncio.sleep(0.1)
        async with asyncio.timeout(20):  # the last sentence, ended by the pause
            await last_words.wait()
        assert not reader.done()  # still open: the pause ended the utterance, not the stream
        reader.cancel()
    assert len(texts) > 1, texts
    assert wer(BECKETT_TEXT, " ".join(texts)) <= 0.2, texts
    assert "thank you" not in " ".join(texts).lower()


def test_xrx_mode_detection() -> None:
    from app.frontends.xrx import configured_mode, detect_mode

    assert detect_mode(3200, 16000) == "stream"  # 100 ms
    assert detect_mode(640, 16000) == "stream"  # 20 ms
    assert detect_mode(int(0.65 * 32000), 16000) == "utterance"  # "yes" + 250 ms silence
    assert configured_mode(None, "faster_whisper") == "auto"
    assert configured_mode(None, "deepgram") == "stream"
    assert configured_mode("utterance", "deepgram") == "utterance"
