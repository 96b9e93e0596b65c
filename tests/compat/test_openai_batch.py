"""The official ``openai`` package's ``audio.transcriptions.create``, unchanged but for its base
URL and key, against ``POST /v1/audio/transcriptions`` on a real gateway: the local engine on
real speech in every response_format, the OpenAI fake through ``whisper-1``, and errors in
OpenAI's shape (``openai`` raises its typed errors from them)."""

from __future__ import annotations

import io
import wave

import openai
import pytest
from openai import AsyncOpenAI

from tests.compat.conftest import server_state
from tests.servers import Gateway
from tests.speech import BECKETT_TEXT, normalize, pcm, wer

AUDIO = pcm("beckett.wav")


def wav(data: bytes, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)
    return out.getvalue()


WAV = wav(AUDIO)


def client(gw: Gateway, key: str | None = None) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key or gw.dev_key, base_url=f"{gw.http_url}/v1", max_retries=0)


async def test_every_response_format(compat_gateway: Gateway) -> None:
    async with client(compat_gateway) as oai:
        await every_response_format(oai)
    assert not server_state(compat_gateway).sessions


async def every_response_format(oai: AsyncOpenAI) -> None:
    create = oai.audio.transcriptions.create
    plain = await create(file=("beckett.wav", WAV), model="local.tiny.en")
    assert wer(BECKETT_TEXT, plain.text) <= 0.2, plain.text
    text = await create(file=("beckett.wav", WAV), model="local.tiny.en",
                        response_format="text")
    assert isinstance(text, str) and wer(BECKETT_TEXT, text) <= 0.2
    srt = await create(file=("beckett.wav", WAV), model="local.tiny.en", response_format="srt")
    assert srt.startswith("1\n00:00:") and " --> " in srt
    assert wer(BECKETT_TEXT, " ".join(line for line in srt.splitlines()
                                       if line and "-->" not in line
                                       and not line.isdigit())) <= 0.2
    vtt = await create(file=("beckett.wav", WAV), model="local.tiny.en", response_format="vtt")
    assert vtt.startswith("WEBVTT") and "00:00:0" in vtt
    verbose = await create(file=("beckett.wav", WAV), model="local.tiny.en",
                           response_format="verbose_json", language="en", temperature=0.0,
                           timestamp_granularities=["word", "segment"])
    assert wer(BECKETT_TEXT, verbose.text) <= 0.2
    assert verbose.duration == pytest.approx(len(AUDIO) / 32000, abs=0.05)
    assert verbose.segments and verbose.words
    assert [w.word for w in verbose.words][-1].lower().startswith("better")
    assert all(s.start <= s.end for s in verbose.segments)
    words_only = await create(file=("beckett.wav", WAV), model="local.tiny.en",
                              response_format="verbose_json", timestamp_granularities=["word"])
    assert words_only.words and not words_only.segments
    # prompt reaches the model (initial_prompt); with a prompt tiny.en is known to add
    # "Thank you." in the pauses of this reading, so only acceptance is checked here
    prompted = await create(file=("beckett.wav", WAV), model="local.tiny.en",
                            prompt="Samuel Beckett")
    assert "better" in prompted.text.lower()


async def test_openai_model_name_through_the_fake(compat_gateway: Gateway) -> None:
    async with client(compat_gateway) as oai:
        result = await oai.audio.transcriptions.create(file=("beckett.wav", WAV),
                                                       model="whisper-1")
    assert normalize(result.text) == normalize(BECKETT_TEXT)


async def test_errors_in_openai_shape(compat_gateway: Gateway) -> None:
    async with client(compat_gateway, key="sg_wrong") as bad:
        with pytest.raises(openai.AuthenticationError) as auth:
            await bad.audio.transcriptions.create(file=("a.wav", WAV), model="local.tiny.en")
    assert auth.value.status_code == 401 and auth.value.code == "invalid_api_key"
    async with client(compat_gateway) as oai:
        await bad_requests(oai)
    assert not server_state(compat_gateway).sessions


async def bad_requests(oai: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await oai.audio.transcriptions.create(file=("a.wav", WAV), model="nosuch.model")
    assert "nosuch" in missing.value.message
    with pytest.raises(openai.BadRequestError) as garbage:
        await oai.audio.transcriptions.create(file=("a.mp3", b"\x00\x01not audio" * 50),
                                              model="local.tiny.en")
    assert "invalid audio" in garbage.value.message
    with pytest.raises(openai.BadRequestError) as fmt:
        await oai.audio.transcriptions.create(file=("a.wav", WAV), model="local.tiny.en",
                                              response_format="diarized_json")
    assert fmt.value.param == "response_format"
    with pytest.raises(openai.BadRequestError) as lang:
        await oai.audio.transcriptions.create(file=("a.wav", WAV), model="local.tiny.en",
                                              language="english!")
    assert lang.value.param == "language"
