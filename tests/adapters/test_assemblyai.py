"""AssemblyAI adapter: pure parsing on recorded-style turns, then the real protocol on a fake."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from adapters.assemblyai import AssemblyAIAdapter, TurnTracker, parse_turn, ws_query
from adapters.base import (
    AdapterContext,
    Finalized,
    ProviderAuthError,
    ProviderUsage,
    StreamOptions,
    Transcript,
)
from tests.fakes.assemblyai import FakeAssemblyAI
from tests.fakes.driver import check_segments, final_text, finalized_after_finals, finals, run
from tests.speech import BECKETT_TEXT, pcm

CLIP = pcm("beckett.wav")[: 3 * 32000]
CLIP_TEXT = "Ever tried. Ever failed. No matter."

TURN = {
    "type": "Turn", "turn_order": 2, "turn_is_formatted": False, "end_of_turn": False,
    "transcript": "ever", "end_of_turn_confidence": 0.2,
    "words": [
        {"start": 1200, "end": 1480, "text": "ever", "confidence": 0.9, "word_is_final": True},
        {"start": 1500, "end": 1900, "text": "failed", "confidence": 0.7,
         "word_is_final": False},
    ],
}


def adapter(fake: FakeAssemblyAI, key: str = "aai-test-key") -> AssemblyAIAdapter:
    return AssemblyAIAdapter(AdapterContext(api_key=key, base_url=fake.url, connect_timeout=5,
                                            flush_timeout=5))


def test_parse_turn_converts_milliseconds() -> None:
    turn = parse_turn(TURN)
    assert turn.order == 2 and not turn.end_of_turn
    assert [(w.word, w.start, w.end) for w in turn.words] == [("ever", 1.2, 1.48),
                                                               ("failed", 1.5, 1.9)]


def test_formatted_duplicate_becomes_one_final() -> None:
    tracker = TurnTracker(expect_formatted=True)
    eot = {**TURN, "end_of_turn": True, "transcript": "ever failed"}
    formatted = {**eot, "turn_is_formatted": True, "transcript": "Ever failed."}
    events = [e for m in (TURN, eot, formatted, formatted) for e in tracker.feed(parse_turn(m))]
    assert [(e.segment_id, e.is_final, e.text) for e in events] == [
        ("aai-2", False, "ever failed"), ("aai-2", True, "Ever failed.")]
    # An unformatted end-of-turn whose duplicate never comes is released by the next turn.
    tracker.feed(parse_turn({**eot, "turn_order": 3}))
    released = tracker.feed(parse_turn({**TURN, "turn_order": 4}))
    assert [(e.segment_id, e.is_final) for e in released] == [("aai-3", True), ("aai-4", False)]


def test_query_has_required_parameters() -> None:
    q = ws_query("universal-streaming-english",
                 StreamOptions(custom_vocabulary=("Beckett",), diarization=True,
                               speakers_expected=2))
    assert q["speech_model"] == "universal-streaming-english" and q["sample_rate"] == "16000"
    assert q["keyterms_prompt"] == '["Beckett"]' and q["max_speakers"] == "2"
    assert q["format_turns"] == "true"


async def test_streams_paced_frames_and_terminates() -> None:
    async with FakeAssemblyAI() as fake:
        stream = adapter(fake).open_stream("universal-streaming-english",
                                           StreamOptions(diarization=True))
        # The client sends as fast as it can; the adapter must pace to real time.
        events = await run(stream, pcm("beckett.wav"), frame_ms=40)
        log = await fake.wait_closed()
    assert final_text(events) == BECKETT_TEXT
    assert len(finals(events)) == 6
    check_segments(events)
    assert any(isinstance(e, Transcript) and not e.is_final for e in events)
    assert finals(events)[0].speaker == "A"
    usage = [e for e in events if isinstance(e, ProviderUsage)]
    assert usage and usage[0].audio_seconds == pytest.approx(9.96, abs=0.06)
    assert log.headers["authorization"] == "aai-test-key"
    assert log.types() == ["Terminate"] and log.close_code == 1000


async def test_finalize_forces_endpoint_then_acknowledges() -> None:
    async with FakeAssemblyAI(text=CLIP_TEXT, speech_seconds=3.0) as fake:
        stream = adapter(fake).open_stream("universal-streaming-english", StreamOptions())
        events = await run(stream, CLIP, finalize_after=12)
        log = await fake.wait_closed()
    assert log.types() == ["ForceEndpoint", "Terminate"]
    finalized_after_finals(events)
    assert sum(isinstance(e, Finalized) for e in events) == 1
    assert final_text(events) == CLIP_TEXT
    check_segments(events)


async def test_u3_pro_formats_inline() -> None:
    async with FakeAssemblyAI(text=CLIP_TEXT, speech_seconds=3.0) as fake:
        stream = adapter(fake).open_stream("u3-rt-pro", StreamOptions())
        events = await run(stream, CLIP)
    assert final_text(events) == CLIP_TEXT and len(finals(events)) == 3


@pytest.mark.parametrize("key", ["wrong", "Bearer aai-test-key"])
async def test_wrong_key_or_scheme_is_an_auth_error(key: str) -> None:
    async with FakeAssemblyAI() as fake:
        stream = adapter(fake, key=key).open_stream("universal-streaming-english",
                                                    StreamOptions())
        with pytest.raises(ProviderAuthError) as err:
            await stream.start()
        await stream.aclose()
    assert err.value.code == 1008


async def test_fake_rejects_what_the_service_rejects() -> None:
    """The fake is a strict judge: unpaced audio, short frames, missing parameters."""
    async with FakeAssemblyAI() as fake:
        headers = {"Authorization": "aai-test-key"}
        with pytest.raises(InvalidStatus) as status:
            async with connect(f"{fake.url}/v3/ws?sample_rate=16000", additional_headers=headers):
                pass
        assert status.value.response.status_code == 400
        url = f"{fake.url}/v3/ws?speech_model=universal-streaming-english&sample_rate=16000"
        for frames in ([CLIP[i:i + 3200] for i in range(0, len(CLIP), 3200)], [CLIP[:640]]):
            async with connect(url, additional_headers=headers) as ws:
                assert json.loads(await ws.recv())["type"] == "Begin"
                with pytest.raises(ConnectionClosedError) as closed:
                    for frame in frames:
                        await ws.send(frame)
                    async with asyncio.timeout(5):
                        while True:
                            message = json.loads(await ws.recv())
                            assert message["type"] in ("Turn", "Error")
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 3007
