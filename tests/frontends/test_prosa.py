"""``/v2/speech/stt``: the Prosa streaming protocol, driven the way Prosa's own examples do.

https://docs2.prosa.ai/speech/stt/streaming/getting_started/ — Python: ``x-api-key`` header,
config ``{"label", "model": "stt-general-online", "include_partial": False}``, the file in
16000-byte chunks, ``b""`` at the end, then read ``result``/``partial`` messages. JavaScript:
``{"token": apiKey}`` as the first message instead of the header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import numpy as np
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from app.audio import wav_bytes
from tests.frontends.conftest import encode
from tests.servers import Gateway
from tests.speech import BECKETT_TEXT, pcm, wer

MAX_WER = 0.25


async def prosa_session(gateway: Gateway, audio: bytes, config: dict[str, Any], *,
                        header_key: bool = True, chunk: int = 16000,
                        pace: float | None = None) -> tuple[list[dict[str, Any]], int | None]:
    headers = {"x-api-key": gateway.dev_key} if header_key else {}
    messages: list[dict[str, Any]] = []
    async with websockets.connect(f"{gateway.ws_url}/v2/speech/stt",
                                  additional_headers=headers) as ws:
        if not header_key:
            await ws.send(json.dumps({"token": gateway.dev_key}))
        await ws.send(json.dumps(config))

        async def send_audio() -> None:
            for i in range(0, len(audio), chunk):
                await ws.send(audio[i:i + chunk])
                if pace:
                    await asyncio.sleep(pace)
            await ws.send(b"")  # Signifies the end of audio stream

        sender = asyncio.create_task(send_audio())
        try:
            async for raw in ws:
                messages.append(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
    return messages, ws.close_code


def results_text(messages: list[dict[str, Any]]) -> str:
    return " ".join(m["transcript"] for m in messages if m["type"] == "result")


async def test_mp3_file_with_header_key_as_in_prosa_python_example(gateway: Gateway) -> None:
    mp3 = encode(pcm("beckett.wav"), 16000, "mp3", "libmp3lame")
    messages, code = await prosa_session(
        gateway, mp3, {"label": "Streaming Test", "model": "stt-general-online",
                       "include_partial": False})
    assert code == 1000
    assert messages[0]["type"] == "created" and messages[0]["label"] == "Streaming Test"
    assert {m["type"] for m in messages[1:]} == {"result"}
    assert wer(BECKETT_TEXT, results_text(messages)) <= MAX_WER, messages
    times = [(m["time_start"], m["time_end"]) for m in messages if m["type"] == "result"]
    assert all(0 <= start <= end for start, end in times)
    assert times == sorted(times)


async def test_token_message_and_44k_stereo_wav(gateway: Gateway) -> None:
    """The JS example: token first; the WAV header (44.1 kHz, 2 channels) only in chunk one."""
    mono = pcm("beckett.wav", 44100)
    samples = np.frombuffer(mono, dtype="<i2")
    stereo = np.stack([samples, samples], axis=1).astype("<i2").tobytes()
    wav = wav_bytes(b"", 44100)  # header template, then patch channels/rates for stereo
    header = bytearray(wav[:44])
    header[22:24] = (2).to_bytes(2, "little")
    header[28:32] = (44100 * 4).to_bytes(4, "little")
    header[32:34] = (4).to_bytes(2, "little")
    header[40:44] = len(stereo).to_bytes(4, "little")
    header[4:8] = (36 + len(stereo)).to_bytes(4, "little")
    messages, code = await prosa_session(
        gateway, bytes(header) + stereo,
        {"model": "stt-general-online", "label": "This is example streaming session"},
        header_key=False)
    assert code == 1000, messages
    assert wer(BECKETT_TEXT, results_text(messages)) <= MAX_WER, messages


async def test_ogg_opus_with_partials_paced_like_a_live_source(gateway: Gateway) -> None:
    ogg = encode(pcm("beckett.wav", 48000), 48000, "ogg", "libopus")
    seconds = len(pcm("beckett.wav")) / 32000
    chunks = max(1, len(ogg) // 4000)
    messages, code = await prosa_session(
        gateway, ogg, {"model": "local.tiny.en", "include_partial": True,
                       "audio": {"format": "ogg", "channels": 1, "sample_rate": 16000}},
        chunk=4000, pace=seconds / chunks)
    assert code == 1000
    kinds = [m["type"] for m in messages]
    assert "partial" in kinds and "result" in kinds
    assert wer(BECKETT_TEXT, results_text(messages)) <= MAX_WER, messages


async def test_headerless_pcm_at_the_declared_rate(gateway: Gateway) -> None:
    messages, code = await prosa_session(
        gateway, pcm("beckett.wav", 8000),
        {"model": "stt-general-online", "audio": {"format": "pcm", "sample_rate": 8000}},
        chunk=3200)
    assert code == 1000
    assert wer(BECKETT_TEXT, results_text(messages)) <= MAX_WER, messages


@pytest.mark.parametrize(("header_key", "first", "close_code"), [
    (False, {"token": "sg_not_a_key"}, 4401),
    (False, {"model": "stt-general-online"}, 4401),  # no token, no header
    (True, {"model": "nosuch.model"}, 4404),
    (True, {"model": "stt-general-online", "include_partial": "yes"}, 4400),
    (True, {"model": "stt-general-online", "audio": {"sample_rate": 4000}}, 4400),
])
async def test_refusals_send_an_error_message_then_close(
        gateway: Gateway, header_key: bool, first: dict[str, Any], close_code: int) -> None:
    headers = {"x-api-key": gateway.dev_key} if header_key else {}
    async with websockets.connect(f"{gateway.ws_url}/v2/speech/stt",
                                  additional_headers=headers) as ws:
        await ws.send(json.dumps(first))
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert error["type"] == "error" and error["close_code"] == close_code
    assert error["message"]
    assert ws.close_code == close_code


async def test_undecodable_audio_is_a_4400_naming_the_cause(gateway: Gateway) -> None:
    messages, code = await prosa_session(
        gateway, b"OggS" + bytes(range(256)) * 40, {"model": "stt-general-online"})
    assert code == 4400
    assert messages[-1]["type"] == "error" and "ogg" in messages[-1]["message"]
