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
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes._server import BECKETT_SECONDS
from tests.fakes.providers import upstream
from tests.servers import Gateway, running_gateway
from tests.speech import BECKETT_TEXT, pcm
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


async def active_sessions(gw: Gateway) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{gw.http_url}/metrics")).text
    match = re.search(r"^speechgate_active_sessions (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))


async def no_session_left(gw: Gateway, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while await active_sessions(gw):  # noqa: ASYNC110 - polling another process's gauge
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
