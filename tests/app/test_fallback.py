"""Fallback: a session moves to the next model when its provider fails, before or during."""

from __future__ import annotations

from tests.fakes.deepgram import FakeDeepgram
from tests.servers import free_port, running_gateway
from tests.speech import BECKETT_TEXT, pcm, wer
from tests.wsclient import transcribe

BECKETT = pcm("beckett.wav")


async def test_unconfigured_primary_falls_back_before_the_stream() -> None:
    with running_gateway() as gw:
        result = await transcribe(gw.ws_url, BECKETT, key=gw.dev_key, params={
            "model": "deepgram.nova-3", "fallback": "local.tiny.en",
            "output_format": "verbose_json"})
        plain = await transcribe(gw.ws_url, BECKETT, key=gw.dev_key,
                                 params={"model": "deepgram.nova-3"})
    assert result.close_code == 1000, result.close_reason
    created = result.messages[0]
    assert created["model"] == "local.tiny.en"
    assert any("DEEPGRAM_API_KEY" in w for w in created["warnings"])
    assert wer(BECKETT_TEXT, result.final_text()) <= 0.2
    # Without a fallback the client is told what to set.
    assert plain.close_code == 4503 and "DEEPGRAM_API_KEY" in plain.close_reason


async def test_unreachable_primary_falls_back() -> None:
    dead = f"ws://127.0.0.1:{free_port()}"
    with running_gateway(deepgram_api_key="k", deepgram_base_url=dead) as gw:
        result = await transcribe(gw.ws_url, BECKETT, key=gw.dev_key, params={
            "model": "deepgram.nova-3", "fallback": "local.tiny.en", "output_format": "json"})
        alone = await transcribe(gw.ws_url, BECKETT, key=gw.dev_key,
                                 params={"model": "deepgram.nova-3"})
    assert result.close_code == 1000
    assert wer(BECKETT_TEXT, result.final_text()) <= 0.2
    assert alone.close_code == 4503


async def test_provider_failing_mid_stream_switches_and_replays() -> None:
    async with FakeDeepgram(api_key="dg-key", fault="drop") as fake:
        with running_gateway(deepgram_api_key="dg-key", deepgram_base_url=fake.url) as gw:
            result = await transcribe(gw.ws_url, BECKETT, key=gw.dev_key, params={
                "model": "deepgram.nova-3", "fallback": "local.tiny.en",
                "output_format": "verbose_json"}, realtime_rate=32000)
    assert result.close_code == 1000, result.close_reason
    switched = result.of_type("provider_switched")
    assert len(switched) == 1
    assert switched[0]["from"] == "deepgram.nova-3" and switched[0]["to"] == "local.tiny.en"
    assert switched[0]["replayed_seconds"] > 0
    assert switched[0]["lost_seconds"] == 0, "everything since the last final was replayed"
    assert "NET-0000" in switched[0]["reason"]
    finals = [t for t in result.of_type("transcript") if t["is_final"]]
    providers = [f["provider"] for f in finals]
    assert providers[-1] == "local"
    starts = [f["start"] for f in finals]
    assert starts == sorted(starts), "session times stay monotonic across the switch"
    assert "better" in result.final_text().lower()
    usage = result.messages[-1]["usage"]
    assert set(usage["provider_seconds"]) == {"deepgram.nova-3", "local.tiny.en"}
