"""Speed and faults end to end: a client streams to a real gateway (uvicorn) relaying to the
provider fakes.

- a 50 s recording sent as fast as allowed ends 1000 with its last words for every streaming
  provider, although each works through it slower than it arrived (only 2 s *without
  progress* are allowed after the end of stream);
- a provider that stalls mid-stream closes the session 4504 within the stall window + 3 s;
- Groq and whisper-1 with a stalled, dropped or failing upload close 4504/4502/4503 in bounded
  time, and the gateway holds no session afterwards (`speechgate_active_sessions` 0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes._server import BECKETT_SECONDS
from tests.fakes.providers import upstream
from tests.servers import Gateway, active_sessions, running_gateway
from tests.speech import BECKETT_TEXT, pcm, wer
from tests.wsclient import transcribe

REPEAT = 5
TEXT = " ".join([BECKETT_TEXT] * REPEAT)


@pytest.fixture
def paced_assemblyai() -> Iterator[None]:
    """AssemblyAI takes audio at real time only: run its adapter and fake on a 10x clock."""
    from adapters.assemblyai import AssemblyAIStream

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AssemblyAIStream, "pace", 10.0)
        yield


async def no_session_left(gw: Gateway, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while await active_sessions(gw.http_url):  # noqa: ASYNC110 - polling another process's gauge
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("provider", ["deepgram", "assemblyai", "openai", "gladia"])
async def test_fast_long_recording_ends_1000_with_its_last_words(
        provider: str, paced_assemblyai: None) -> None:
    fake_kw: dict[str, Any] = {"text": TEXT, "speech_seconds": BECKETT_SECONDS * REPEAT}
    if provider == "assemblyai":
        fake_kw["clock_scale"] = 10.0
    else:
        fake_kw["speed"] = 3.0  # 50 s of audio take the provider ~17 s
    async with upstream(provider, **fake_kw) as up:
        settings = {**up.settings(), "provider_flush_timeout": 2.0}
        with running_gateway(**settings) as gw:
            async with asyncio.timeout(90):
                result = await transcribe(gw.ws_url, pcm("beckett.wav") * REPEAT,
                                          key=gw.dev_key,
                                          params={"model": f"{provider}.{up.model}",
                                                  "output_format": "json"})
            await no_session_left(gw)
        async with asyncio.timeout(5):
            await up.sessions_closed()
    assert result.close_code == 1000, (result.close_code, result.close_reason)
    assert result.final_text() == TEXT


@pytest.mark.parametrize("provider", ["deepgram", "openai"])
async def test_a_stalled_provider_closes_4504_within_its_window(provider: str) -> None:
    window = 2.0
    async with upstream(provider, proxy=True) as up:
        assert up.proxy is not None
        up.proxy.stall_after(64000 * (2 if provider == "openai" else 1))
        settings = {**up.settings(), "provider_stall_timeout": window}
        with running_gateway(**settings) as gw:
            loop = asyncio.get_running_loop()
            task = asyncio.create_task(transcribe(
                gw.ws_url, pcm("beckett.wav") * 3, key=gw.dev_key, realtime_rate=16000,
                params={"model": f"{provider}.{up.model}", "output_format": "json"}))
            async with asyncio.timeout(30):
                await up.proxy.stalled.wait()
            stalled = loop.time()
            async with asyncio.timeout(window + 3 + 2):  # + the close reaching the client
                result = await task
            await no_session_left(gw)
    assert result.close_code == 4504, (result.close_code, result.close_reason)
    assert "stalled" in result.close_reason
    assert loop.time() - stalled <= window + 5


@pytest.mark.parametrize(("model", "fault", "close"), [
    ("groq.whisper-large-v3-turbo", "stall", 4504),
    ("groq.whisper-large-v3-turbo", "drop", 4502),
    ("groq.whisper-large-v3-turbo", "server_error", 4503),
    ("openai.whisper-1", "stall", 4504),
    ("openai.whisper-1", "drop", 4502),
])
async def test_segmented_upload_faults_close_in_bounded_time(model: str, fault: str,
                                                             close: int) -> None:
    provider = model.split(".")[0]
    async with upstream(provider, fault=fault) as up:
        settings = {**up.settings(), "provider_flush_timeout": 1.5}
        with running_gateway(**settings) as gw:
            async with asyncio.timeout(30):  # as fast as allowed: far more than one upload
                result = await transcribe(gw.ws_url, pcm("beckett.wav") * 4, key=gw.dev_key,
                                          params={"model": model, "output_format": "json"})
            await no_session_left(gw)
    assert result.close_code == close, (result.close_code, result.close_reason)


@pytest.mark.slow
async def test_a_stall_mid_stream_falls_back_to_the_local_engine_with_no_word_lost() -> None:
    """Deepgram stalls 2 s into a 30 s real-time stream (no final yet); with
    ``fallback=local.tiny.en`` the session switches within the stall window + 3 s, replays
    everything since the last final (nothing lost), and the local engine's finals cover the
    whole recording, stalled part included."""
    window = 2.0
    async with upstream("deepgram", proxy=True) as up:
        assert up.proxy is not None
        up.proxy.stall_after(64000)  # 2 s of 16 kHz audio reach the fake, then nothing
        settings = {**up.settings(), "provider_stall_timeout": window}
        with running_gateway(**settings) as gw:
            loop = asyncio.get_running_loop()
            task = asyncio.create_task(transcribe(
                gw.ws_url, pcm("beckett.wav") * 3, key=gw.dev_key, realtime_rate=16000,
                params={"model": f"deepgram.{up.model}", "fallback": "local.tiny.en",
                        "output_format": "verbose_json"}))
            async with asyncio.timeout(30):
                await up.proxy.stalled.wait()
            stalled = loop.time()
            async with asyncio.timeout(90):
                result = await task
            await no_session_left(gw)
    assert result.close_code == 1000, (result.close_code, result.close_reason)
    [switch] = result.of_type("provider_switched")
    at = result.arrival[result.messages.index(switch)]
    assert at - stalled <= window + 3 + 1, at - stalled  # + the event reaching the client
    assert switch["to"] == "local.tiny.en" and switch["lost_seconds"] == 0
    assert switch["replayed_seconds"] >= 2.0  # the stalled part, since there was no final
    assert wer(" ".join([BECKETT_TEXT] * 3), result.final_text()) <= 0.2, result.final_text()
    first_final = next(t for t, m in zip(result.arrival, result.messages, strict=True)
                       if t > at and isinstance(m, dict) and m.get("is_final"))
    print(f"first fallback final {first_final - at:.2f} s after the switch")
