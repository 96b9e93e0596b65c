"""Every cloud provider end to end: a client streams real speech to the gateway's
``/v1/transcribe`` (served by uvicorn), the gateway relays it through the provider adapter to
the provider's fake, in each output format (text, json, verbose_json); plus the failures a
client sees (4502 for rejected gateway credentials, 4503 naming the unset variable)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.fakes.providers import CLOUD, Upstream, upstream
from tests.servers import Gateway, running_gateway
from tests.speech import BECKETT_TEXT, pcm
from tests.wsclient import transcribe

AUDIO = pcm("beckett.wav")


@pytest.fixture(scope="module")
async def upstreams() -> AsyncIterator[dict[str, Upstream]]:
    async with contextlib.AsyncExitStack() as stack:
        ups = {p: await stack.enter_async_context(upstream(p)) for p in CLOUD}
        yield ups


@pytest.fixture(scope="module")
def gateway(upstreams: dict[str, Upstream]) -> Iterator[Gateway]:
    settings: dict[str, Any] = {"provider_connect_timeout": 5.0, "provider_flush_timeout": 5.0}
    for up in upstreams.values():
        settings.update(up.settings())
    with running_gateway(**settings) as gw:
        yield gw


def model_id(up: Upstream) -> str:
    return f"{up.provider}.{up.model}"


@pytest.mark.parametrize("provider", list(CLOUD))
@pytest.mark.parametrize("output_format", ["text", "json", "verbose_json"])
async def test_provider_end_to_end(gateway: Gateway, upstreams: dict[str, Upstream],
                                   provider: str, output_format: str) -> None:
    up = upstreams[provider]
    result = await transcribe(gateway.ws_url, AUDIO, key=gateway.dev_key,
                              params={"model": model_id(up), "output_format": output_format})
    assert result.close_code == 1000, (result.close_code, result.close_reason, result.messages)
    assert result.final_text() == BECKETT_TEXT
    if output_format == "text":
        assert all(isinstance(m, str) for m in result.messages)
    elif output_format == "json":
        finals = result.finals()
        assert finals and all(f["is_final"] for f in finals)
        timed = [f for f in finals if f["words"]]
        if up.adapter.capabilities(up.model).word_timestamps:
            assert timed and all(w["start"] <= w["end"] for f in timed for w in f["words"])
    else:
        created, ended = result.messages[0], result.messages[-1]
        assert created["type"] == "session.created" and created["provider"] == provider
        assert ended["type"] == "session.ended"
        assert ended["usage"]["audio_seconds"] == pytest.approx(len(AUDIO) / 32000, abs=0.05)
        transcripts = result.of_type("transcript")
        assert all(t["provider"] == provider for t in transcripts)
        if up.adapter.capabilities(up.model).interim_results:
            assert any(not t["is_final"] for t in transcripts)
        finals = [t for t in transcripts if t["is_final"]]
        assert len({t["segment_id"] for t in finals}) == len(finals)  # never repeated


async def test_openai_whisper_1_end_to_end(gateway: Gateway) -> None:
    result = await transcribe(gateway.ws_url, AUDIO, key=gateway.dev_key,
                              params={"model": "openai.whisper-1", "output_format": "json"})
    assert result.close_code == 1000 and result.final_text() == BECKETT_TEXT


async def test_finalize_through_the_gateway(gateway: Gateway,
                                            upstreams: dict[str, Upstream]) -> None:
    import json

    up = upstreams["deepgram"]
    half = 28 * 3200
    result = await transcribe(gateway.ws_url, AUDIO[half:], key=gateway.dev_key,
                              params={"model": model_id(up), "output_format": "verbose_json"},
                              before=[AUDIO[:half], json.dumps({"type": "finalize"})])
    kinds = [m["type"] for m in result.messages]
    assert "finalized" in kinds
    index = kinds.index("finalized")
    assert any(m["type"] == "transcript" and m["is_final"] for m in result.messages[:index])
    assert result.final_text() == BECKETT_TEXT


FAULTS = [
    ("deepgram", "data_error", 4502, "DATA-0000"),
    ("deepgram", "drop", 4504, "NET-0000"),
    ("assemblyai", "too_many", 4429, "3009"),
    ("openai", "server_error", 4503, "server_error"),
    ("gladia", "rate_limit", 4429, "429"),
    ("groq", "stall", 4504, "timed out"),
]


@pytest.mark.parametrize(("provider", "fault", "close", "reason"), FAULTS,
                         ids=[f"{p}-{f}" for p, f, _, _ in FAULTS])
async def test_upstream_faults_reach_the_client_with_the_provider_code(
        provider: str, fault: str, close: int, reason: str) -> None:
    async with upstream(provider, fault=fault) as up:
        settings = {**up.settings(), "provider_flush_timeout": 1.5}
        with running_gateway(**settings) as gw:
            result = await transcribe(gw.ws_url, AUDIO[: 5 * 32000], key=gw.dev_key,
                                      params={"model": model_id(up),
                                              "output_format": "verbose_json"})
        async with asyncio.timeout(5):
            await up.sessions_closed()  # the gateway left nothing open upstream
    assert result.close_code == close, (result.close_code, result.close_reason)
    assert reason in result.close_reason
    errors = result.of_type("error")
    assert errors and errors[-1]["code"]


async def test_rejected_provider_credentials_close_4502() -> None:
    async with upstream("deepgram") as up:
        settings = {**up.settings(), "deepgram_api_key": "revoked"}
        with running_gateway(**settings) as gw:
            result = await transcribe(gw.ws_url, AUDIO[:32000], key=gw.dev_key,
                                      params={"model": model_id(up)})
    assert result.close_code == 4502
    assert "401" in result.close_reason


async def test_unconfigured_provider_closes_4503_naming_the_variable() -> None:
    with running_gateway() as gw:
        result = await transcribe(gw.ws_url, AUDIO[:32000], key=gw.dev_key,
                                  params={"model": "assemblyai.universal-streaming-english"})
    assert result.close_code == 4503
    assert "ASSEMBLYAI_API_KEY" in result.close_reason
