"""The providers added for voice agents, end to end through a real gateway: Deepgram Flux in
each output format with its turn events in verbose_json (Soniox and ElevenLabs run in
test_providers_e2e.py with the others), the catalogue entries, the 4503 naming the variable
when unconfigured, and each provider's faults reaching the client with the right close code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.providers import Upstream, upstream
from tests.servers import Gateway, running_gateway
from tests.speech import BECKETT_TEXT, pcm
from tests.wsclient import transcribe

AUDIO = pcm("beckett.wav")
NEW_MODELS = ["soniox.stt-rt-v4", "soniox.stt-rt-v5", "elevenlabs.scribe_v2_realtime",
              "deepgram.flux-general-en", "deepgram.flux-general-multi"]


@pytest.fixture(scope="module")
async def flux() -> AsyncIterator[Upstream]:
    async with upstream("deepgram", model="flux-general-en") as up:
        yield up


@pytest.fixture(scope="module")
def gateway(flux: Upstream) -> Iterator[Gateway]:
    with running_gateway(provider_connect_timeout=5.0, provider_flush_timeout=5.0,
                         **flux.settings()) as gw:
        yield gw


@pytest.mark.parametrize("output_format", ["text", "json", "verbose_json"])
async def test_flux_end_to_end(gateway: Gateway, flux: Upstream, output_format: str) -> None:
    result = await transcribe(gateway.ws_url, AUDIO, key=gateway.dev_key,
                              params={"model": "deepgram.flux-general-en",
                                      "output_format": output_format})
    assert result.close_code == 1000, (result.close_code, result.close_reason)
    assert result.final_text() == BECKETT_TEXT
    if output_format == "text":
        assert all(isinstance(m, str) for m in result.messages)
    elif output_format == "json":
        finals = result.finals()
        assert len(finals) == BECKETT_TEXT.count(".")  # one final per turn
        assert all(w["start"] <= w["end"] for f in finals for w in f["words"])
        assert not any(m.get("type") == "turn" for m in result.messages)  # verbose_json only
    else:
        kinds = [m["type"] for m in result.messages]
        assert kinds[0] == "session.created" and kinds[-1] == "session.ended"
        turns = result.of_type("turn")
        assert turns and {t["event"] for t in turns} == {"eager_end_of_turn", "turn_resumed"}
        for t in turns:
            assert set(t) == {"type", "event", "turn_index", "confidence"}
            assert isinstance(t["turn_index"], int) and 0 < t["confidence"] < 1
        assert kinds.count("speech_started") == kinds.count("utterance_end") == len(
            result.finals())
        # A turn's events come before its final.
        first_final = next(i for i, m in enumerate(result.messages)
                           if m["type"] == "transcript" and m["is_final"])
        assert "turn" in kinds[:first_final]
    async with asyncio.timeout(5):
        await flux.sessions_closed()


async def test_new_models_are_listed_and_unconfigured_ones_name_their_variable() -> None:
    with running_gateway() as gw:
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            body = (await http.get("/v1/models")).json()
        models = {m["id"]: m for m in body["models"]}
        for model_id in NEW_MODELS:
            entry = models[model_id]
            assert entry["available"] is False and entry["streamable"] is True
            assert entry["interim_results"] is True and entry["word_timestamps"] is True
        assert "SONIOX_API_KEY" in models["soniox.stt-rt-v4"]["unavailable_reason"]
        assert "ELEVENLABS_API_KEY" in models["elevenlabs.scribe_v2_realtime"][
            "unavailable_reason"]
        assert models["elevenlabs.scribe_v2_realtime"]["custom_vocabulary"] is True
        assert models["soniox.stt-rt-v5"]["diarization"] is True
        assert models["deepgram.flux-general-en"]["languages"] == ["en"]
        assert models["deepgram.flux-general-multi"]["language_detection"] is True
        for model_id, variable in (("soniox.stt-rt-v5", "SONIOX_API_KEY"),
                                   ("elevenlabs.scribe_v2_realtime", "ELEVENLABS_API_KEY")):
            result = await transcribe(gw.ws_url, AUDIO[:32000], key=gw.dev_key,
                                      params={"model": model_id})
            assert result.close_code == 4503 and variable in result.close_reason


FAULTS: list[tuple[str, str | None, str, int, str]] = [
    ("soniox", None, "rate_limit", 4429, "429"),
    ("soniox", None, "server_error", 4503, "503"),
    ("elevenlabs", None, "quota", 4502, "exceeded your quota"),
    ("elevenlabs", None, "rate_limit", 4429, "rate_limited"),
    ("deepgram", "flux-general-en", "close_no_code", 4502, "1005"),
    ("deepgram", "flux-general-en", "error", 4503, "INTERNAL_SERVER_ERROR"),
]


@pytest.mark.parametrize(("provider", "model", "fault", "close", "reason"), FAULTS,
                         ids=[f"{p}-{f}" for p, _, f, _, _ in FAULTS])
async def test_upstream_faults_reach_the_client(provider: str, model: str | None, fault: str,
                                                close: int, reason: str) -> None:
    async with upstream(provider, model=model, fault=fault) as up:
        settings: dict[str, Any] = {**up.settings(), "provider_flush_timeout": 1.5}
        with running_gateway(**settings) as gw:
            result = await transcribe(gw.ws_url, AUDIO[: 5 * 32000], key=gw.dev_key,
                                      params={"model": f"{up.provider}.{up.model}",
                                              "output_format": "verbose_json"})
        async with asyncio.timeout(5):
            await up.sessions_closed()  # the gateway left nothing open upstream
    assert result.close_code == close, (result.close_code, result.close_reason)
    assert reason in result.close_reason
    assert "test-key" not in result.close_reason  # no credential in a close reason
    errors = result.of_type("error")
    assert errors and errors[-1]["code"]


@pytest.mark.parametrize("model", ["gpt-live-transcribe", "gpt-realtime-whisper"])
async def test_openai_models_without_server_vad_give_a_final_per_turn(model: str) -> None:
    async with upstream("openai", model=model) as up:
        with running_gateway(**up.settings()) as gw:
            result = await transcribe(gw.ws_url, AUDIO, key=gw.dev_key,
                                      params={"model": f"openai.{model}",
                                              "output_format": "json"})
        async with asyncio.timeout(5):
            await up.sessions_closed()
    assert result.close_code == 1000, (result.close_code, result.close_reason)
    assert result.final_text() == BECKETT_TEXT
    # Without our VAD's commits these models give one final, at the end of the session.
    assert len(result.finals()) >= 3


def test_credentials_and_base_urls_reach_their_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.gateway import adapter_contexts
    from config import load_settings

    monkeypatch.setenv("SONIOX_API_KEY", "sx-from-env")
    monkeypatch.setenv("SPEECHGATE_ELEVENLABS_API_KEY", "xi-from-env")
    monkeypatch.setenv("SPEECHGATE_ELEVENLABS_BASE_URL", "https://api.eu.residency.elevenlabs.io")
    monkeypatch.setenv("SPEECHGATE_GROQ_MERGE_WAIT", "0")
    contexts = adapter_contexts(load_settings())
    assert contexts["soniox"].api_key == "sx-from-env"
    assert contexts["soniox"].base_url == "wss://stt-rt.soniox.com"
    assert contexts["elevenlabs"].api_key == "xi-from-env"
    assert contexts["elevenlabs"].base_url == "https://api.eu.residency.elevenlabs.io"
    assert contexts["groq"].merge_wait == 0.0
    assert "sx-from-env" not in repr(load_settings())  # a secret, never printed
