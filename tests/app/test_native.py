"""The native WebSocket end to end: real uvicorn, real clients, the real tiny.en on real speech."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.servers import Gateway
from tests.speech import BECKETT_TEXT, pcm, wer
from tests.wsclient import transcribe

BECKETT = pcm("beckett.wav")
BECKETT_SECONDS = len(BECKETT) / 32000


async def test_text_format_gives_the_spoken_words(gateway: Gateway) -> None:
    result = await transcribe(gateway.ws_url, BECKETT, key=gateway.dev_key)
    assert result.close_code == 1000, result.close_reason
    assert all(isinstance(m, str) for m in result.messages)
    assert wer(BECKETT_TEXT, result.final_text()) <= 0.20, result.final_text()
    # close_stream right after the last word: the tail is not lost.
    assert "better" in result.final_text().lower()


async def test_json_words_increase_inside_the_audio(gateway: Gateway) -> None:
    result = await transcribe(gateway.ws_url, BECKETT, key=gateway.dev_key,
                              params={"output_format": "json"})
    assert result.close_code == 1000, result.close_reason
    finals = result.finals()
    assert finals and all(set(f) >= {"id", "text", "language", "is_final", "start", "end",
                                     "words"} for f in finals)
    words = [w for f in finals for w in f["words"]]
    assert len(words) >= 8
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(0.0 <= w["start"] <= w["end"] <= BECKETT_SECONDS + 0.05 for w in words)
    assert all(0.0 <= w["confidence"] <= 1.0 for w in words)
    assert not [m for m in result.messages if not m.get("is_final")]  # no partials by default


async def test_verbose_json_event_stream(gateway: Gateway) -> None:
    # Real-time pacing so partials have time to appear before the finals.
    result = await transcribe(gateway.ws_url, BECKETT, key=gateway.dev_key,
                              params={"output_format": "verbose_json"}, realtime_rate=16000)
    assert result.close_code == 1000, result.close_reason
    types = [m["type"] for m in result.messages]
    assert types[0] == "session.created" and types[-1] == "session.ended"
    created = result.messages[0]
    assert created["model"] == "local.tiny.en" and created["provider"] == "local"
    assert created["sample_rate"] == 16000
    ended = result.messages[-1]
    assert ended["usage"]["audio_seconds"] == pytest.approx(BECKETT_SECONDS, rel=0.01)
    assert ended["usage"]["provider_seconds"]["local.tiny.en"] == pytest.approx(
        BECKETT_SECONDS, rel=0.01)
    transcripts = result.of_type("transcript")
    finals = [t for t in transcripts if t["is_final"]]
    partials = [t for t in transcripts if not t["is_final"]]
    assert partials, "verbose_json sends partials by default"
    final_index = {t["segment_id"]: i for i, t in enumerate(result.messages)
                   if t.get("type") == "transcript" and t["is_final"]}
    for i, p in enumerate(result.messages):
        if p.get("type") == "transcript" and not p["is_final"]:
            assert p["segment_id"] in final_index, "a partial names the final replacing it"
            assert i < final_index[p["segment_id"]], "partials arrive before their final"
    ids = [f["segment_id"] for f in finals]
    assert len(ids) == len(set(ids)), "finals are never repeated"
    assert all(f["provider"] == "local" for f in finals)
    assert wer(BECKETT_TEXT, " ".join(f["text"] for f in finals)) <= 0.20
    assert result.of_type("speech_started")


async def test_48k_input_gives_the_same_text_as_16k(gateway: Gateway) -> None:
    r16 = await transcribe(gateway.ws_url, BECKETT, key=gateway.dev_key)
    r48 = await transcribe(gateway.ws_url, pcm("beckett.wav", 48000), key=gateway.dev_key,
                           params={"sample_rate": 48000}, chunk=9600)
    assert r48.close_code == 1000, r48.close_reason
    assert wer(r16.final_text(), r48.final_text()) <= 0.1, (r16.final_text(), r48.final_text())


async def test_odd_length_frames_lose_nothing(gateway: Gateway) -> None:
    result = await transcribe(gateway.ws_url, BECKETT, key=gateway.dev_key, chunk=3201,
                              params={"output_format": "verbose_json"}, end="empty")
    assert result.close_code == 1000, result.close_reason
    assert result.messages[-1]["usage"]["audio_seconds"] == pytest.approx(BECKETT_SECONDS,
                                                                          rel=0.001)
    assert wer(BECKETT_TEXT, result.final_text()) <= 0.20


@pytest.mark.parametrize("how", ["bearer", "x-api-key", "query", "message"])
async def test_every_key_method_works(gateway: Gateway, how: str) -> None:
    headers: dict[str, str] = {}
    params: dict[str, str] = {"output_format": "json"}
    before: list[str | bytes] = []
    if how == "bearer":
        headers["Authorization"] = f"Bearer {gateway.dev_key}"
    elif how == "x-api-key":
        headers["X-API-Key"] = gateway.dev_key
    elif how == "query":
        params["api_key"] = gateway.dev_key
    else:
        before.append(json.dumps({"type": "auth", "api_key": gateway.dev_key}))
    result = await transcribe(gateway.ws_url, BECKETT[:32000 * 4], headers=headers,
                              params=params, before=before)
    assert result.close_code == 1000, result.close_reason
    assert "tried" in result.final_text().lower()


async def test_bad_key_closes_4401_and_never_echoes_it(gateway: Gateway) -> None:
    result = await transcribe(gateway.ws_url, BECKETT[:3200], key="sg_wrong_key_123",
                              params={"output_format": "json"})
    assert result.close_code == 4401
    assert "sg_wrong_key_123" not in result.close_reason
    assert result.messages and "error" in result.messages[-1]


async def test_audio_before_auth_message_is_refused(gateway: Gateway) -> None:
    result = await transcribe(gateway.ws_url, BECKETT[:3200])
    assert result.close_code == 4401
    assert "auth" in result.close_reason


async def test_no_auth_in_time_closes_4408(gateway: Gateway) -> None:
    async with websockets.connect(f"{gateway.ws_url}/v1/transcribe") as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4408


async def test_bad_parameter_closes_4400_naming_it(gateway: Gateway) -> None:
    result = await transcribe(gateway.ws_url, b"", key=gateway.dev_key,
                              params={"sample_rate": "96000", "output_format": "verbose_json"})
    assert result.close_code == 4400
    assert "sample_rate" in result.close_reason
    assert result.messages[-1]["type"] == "error"


async def test_language_the_model_cannot_do_closes_4400(gateway: Gateway) -> None:
    result = await transcribe(gateway.ws_url, b"", key=gateway.dev_key, params={"language": "fr"})
    assert result.close_code == 4400 and "language" in result.close_reason


async def test_unknown_model_closes_4404(gateway: Gateway) -> None:
    for model in ("nosuch.model", "local.no-such-model"):
        result = await transcribe(gateway.ws_url, b"", key=gateway.dev_key,
                                  params={"model": model})
        assert result.close_code == 4404, (model, result.close_reason)


async def test_two_mib_frame_closes_1009(gateway: Gateway) -> None:
    result = await transcribe(gateway.ws_url, b"\0" * (2 * 1024 * 1024), key=gateway.dev_key,
                              chunk=2 * 1024 * 1024, end="none")
    assert result.close_code == 1009


async def test_invalid_json_is_an_error_event_and_the_session_goes_on(gateway: Gateway) -> None:
    result = await transcribe(gateway.ws_url, BECKETT, key=gateway.dev_key,
                              params={"output_format": "verbose_json", "colour": "blue"},
                              before=["{not json", json.dumps({"type": "dance"}),
                                      json.dumps({"type": "keepalive"})])
    assert result.close_code == 1000
    errors = result.of_type("error")
    assert [e["code"] for e in errors] == ["invalid_message", "invalid_message"]
    assert "dance" in errors[1]["message"]
    assert any("colour" in w for w in result.messages[0]["warnings"])
    assert wer(BECKETT_TEXT, result.final_text()) <= 0.20


async def test_finalize_returns_finals_then_finalized(gateway: Gateway) -> None:
    url = f"{gateway.ws_url}/v1/transcribe?output_format=verbose_json&api_key={gateway.dev_key}"
    async with websockets.connect(url) as ws:
        # The first ~3.3 s: "Ever tried. Ever failed." with no pause long enough to end it.
        for i in range(0, 32000 * 3, 3200):
            await ws.send(BECKETT[i:i + 3200])
        await ws.send(json.dumps({"type": "finalize"}))
        seen = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            seen.append(message)
            if message["type"] == "finalized":
                break
        finals = [m for m in seen if m["type"] == "transcript" and m["is_final"]]
        assert finals and "tried" in " ".join(f["text"] for f in finals).lower()
        await ws.send(json.dumps({"type": "close_stream"}))
        rest = [json.loads(m) async for m in ws]
    assert rest[-1]["type"] == "session.ended"
    assert ws.close_code == 1000


async def test_idle_client_is_closed_4408(gateway: Gateway) -> None:
    url = f"{gateway.ws_url}/v1/transcribe?output_format=json&api_key={gateway.dev_key}"
    async with websockets.connect(url) as ws:
        await ws.send(BECKETT[:32000])
        messages = []
        with pytest.raises(ConnectionClosed):  # the gateway closes after idle_timeout (3 s)
            while True:
                messages.append(await asyncio.wait_for(ws.recv(), 30))
    assert ws.close_code == 4408
    assert "idle" in (ws.close_reason or "")
    assert json.loads(messages[-1])["error"]["code"] == "timeout"


async def test_keepalive_holds_an_idle_session_open(gateway: Gateway) -> None:
    url = f"{gateway.ws_url}/v1/transcribe?output_format=json&api_key={gateway.dev_key}"
    async with websockets.connect(url) as ws:
        for _ in range(5):  # 5 s of silence from the client, longer than idle_timeout (3 s)
            await ws.send(json.dumps({"type": "keepalive"}))
            await asyncio.sleep(1.0)
        await ws.send(json.dumps({"type": "close_stream"}))
        async for _ in ws:
            pass
    assert ws.close_code == 1000


@pytest.mark.parametrize("path, end", [
    ("/v1/transcribe?output_format=json", json.dumps({"type": "close_stream"})),
    ("/v2/speech/stt", b""),
    ("/api/v1/ws?mode=stream", b""),
])
async def test_back_to_back_sessions_on_one_stream_slot_are_all_admitted(
        path: str, end: str | bytes) -> None:
    """The lease is released before the client sees the close: with
    max_concurrent_streams=1, a client that reconnects at once is always admitted."""
    import httpx

    from tests.servers import running_gateway

    admin = "sg_admin_back_to_back"
    with running_gateway(admin_token=admin) as gw:
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            created = await http.post("/v1/admin/keys", json={
                "name": "one-slot", "max_concurrent_streams": 1},
                headers={"Authorization": f"Bearer {admin}"})
            secret = created.json()["secret"]
        closes = []
        for _ in range(40):
            async with websockets.connect(f"{gw.ws_url}{path}",
                                          additional_headers={"x-api-key": secret}) as ws:
                if path.startswith("/v2"):
                    await ws.send(json.dumps({"model": "stt-general-online"}))
                await ws.send(bytes(3200))
                await ws.send(end)
                with contextlib.suppress(ConnectionClosed):
                    async for _message in ws:
                        pass
            closes.append((ws.close_code, ws.close_reason))
    assert closes == [(1000, "session ended")] * 40
