"""Deepgram Flux (``/v2/listen``): the adapter contract run over both Flux models, the turn
events, 80 ms chunks, the forced end of turn before ``CloseStream`` (no tail lost), keepalive
silence taken out of the timestamps, and every fault the fake injects, including Flux's close
without a code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.base import (
    Finalized,
    ProviderAuthError,
    ProviderConnectionLost,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    SpeechStarted,
    StreamOptions,
    Transcript,
    TurnEvent,
    UtteranceEnd,
)
from adapters.deepgram_flux import flux_query, parse_turn_info
from tests.adapters import test_contract as contract
from tests.fakes.driver import check_segments, final_text, finals, run
from tests.fakes.providers import stream_through, upstream
from tests.speech import BECKETT_TEXT, pcm

AUDIO = pcm("beckett.wav")
FLUX = ["flux-general-en", "flux-general-multi"]


# ---- the contract suite, over Flux (same tests, this module's `subj`) -----------------------


@pytest.fixture(params=FLUX)
async def subj(request: pytest.FixtureRequest) -> AsyncIterator[contract.Subject]:
    async with upstream("deepgram", model=request.param) as up:
        yield contract.Subject("deepgram", up.adapter, up.model, up.rate, up.sessions_closed,
                               exact=True)


test_contract_transcribes_and_flushes_the_tail = (
    contract.test_transcribes_and_close_stream_flushes_the_tail)
test_contract_partials_before_their_final = (
    contract.test_partials_come_before_their_final_with_the_same_segment_id)
test_contract_finalize_emits_finals_then_finalized = (
    contract.test_finalize_emits_finals_then_finalized)
test_contract_finalize_with_nothing_pending = (
    contract.test_finalize_with_nothing_pending_is_acknowledged)
test_contract_aclose_is_idempotent = contract.test_aclose_is_idempotent_and_closes_upstream


# ---- Flux specifics --------------------------------------------------------------------------


def test_turn_info_parsing_and_query() -> None:
    info = parse_turn_info({
        "type": "TurnInfo", "event": "EagerEndOfTurn", "turn_index": 3,
        "audio_window_start": 1.0, "audio_window_end": 2.5, "transcript": " Ever tried. ",
        "words": [{"word": "Ever", "confidence": 0.9, "start": 1.1, "end": 1.4},
                  {"word": "tried.", "confidence": 0.8, "start": 1.5, "end": 2.0}],
        "end_of_turn_confidence": 0.62, "languages": ["de", "en"]})
    assert (info.event, info.turn_index, info.transcript) == ("EagerEndOfTurn", 3, "Ever tried.")
    assert info.confidence == 0.62 and info.language == "de"
    assert [(w.word, w.start, w.end) for w in info.words] == [("Ever", 1.1, 1.4),
                                                              ("tried.", 1.5, 2.0)]
    query = dict(flux_query("flux-general-multi", StreamOptions(language="de")))
    assert query["language_hint"] == "de" and query["encoding"] == "linear16"
    assert "interim_results" not in query and "language" not in query
    assert ("keyterm", "Beckett") in flux_query("flux-general-en", StreamOptions(
        custom_vocabulary=("Beckett",)))


async def test_turns_become_speech_started_partials_finals_utterance_ends_and_turn_events(
) -> None:
    async with upstream("deepgram", model="flux-general-en") as up:
        stream = up.adapter.open_stream(up.model, StreamOptions(custom_vocabulary=("Ever",)))
        events = await run(stream, AUDIO)
        log = await up.fake.wait_closed()
    assert final_text(events) == BECKETT_TEXT
    check_segments(events)
    sentences = BECKETT_TEXT.count(".")
    assert len(finals(events)) == sentences  # one final per turn
    assert sum(isinstance(e, SpeechStarted) for e in events) == sentences
    assert sum(isinstance(e, UtteranceEnd) for e in events) == sentences
    turns = [e for e in events if isinstance(e, TurnEvent)]
    assert {t.event for t in turns} == {"eager_end_of_turn", "turn_resumed"}
    assert all(t.confidence is not None and 0 < t.confidence < 1 for t in turns)
    # Each event sits between its turn's speech_started and final.
    first_final = next(i for i, e in enumerate(events)
                       if isinstance(e, Transcript) and e.is_final)
    assert any(isinstance(e, TurnEvent) and e.turn_index == 0 for e in events[:first_final])
    assert log.path == "/v2/listen" and log.query["keyterm"] == ["Ever"]
    assert log.headers["authorization"] == "Token dg-test-key"
    # 80 ms chunks, the last one padded to a whole chunk; nothing lost.
    assert set(up.fake.frame_sizes) == {2560}
    assert log.audio_bytes >= len(AUDIO) and log.audio_bytes - len(AUDIO) < 2560
    assert "KeepAlive" not in log.types()  # Flux has no KeepAlive message


async def test_close_stream_forces_the_end_of_the_open_turn_first() -> None:
    """Cut inside "No matter.": CloseStream alone would leave "No" as a bare Update; the
    adapter sends ForceEndTurn, waits for its EndOfTurn, then CloseStream."""
    async with upstream("deepgram", model="flux-general-en") as up:
        stream = up.adapter.open_stream(up.model, StreamOptions())
        events = await run(stream, AUDIO[: 45 * 3200])
        log = await up.fake.wait_closed()
    assert log.types()[-2:] == ["ForceEndTurn", "CloseStream"]
    assert final_text(events).endswith("No")
    assert log.close_code == 1005  # Flux closes without a code; that is a normal end
    assert isinstance(events[-1], UtteranceEnd)


async def test_finalize_forces_the_end_of_turn() -> None:
    async with upstream("deepgram", model="flux-general-en") as up:
        stream = up.adapter.open_stream(up.model, StreamOptions())
        events = await run(stream, AUDIO, finalize_after=25)
        log = await up.fake.wait_closed()
    # The finalize's ForceEndTurn; at the close, one more only if audio was still unanswered.
    assert log.types()[0] == "ForceEndTurn" and log.types()[-1] == "CloseStream"
    index = next(i for i, e in enumerate(events) if isinstance(e, Finalized))
    before = [e for e in events[:index] if isinstance(e, Transcript) and e.is_final]
    assert before and before[-1].text.endswith("Ever")  # the turn cut at 2.5 s
    assert final_text(events) == BECKETT_TEXT  # the forced turn lost nothing


async def test_keepalive_silence_is_taken_out_of_the_timestamps() -> None:
    async def word_ends(pause: bool) -> list[float]:
        async with upstream("deepgram", model="flux-general-en", idle_timeout=0.6,
                            keepalive_interval=0.2) as up:
            stream = up.adapter.open_stream(up.model, StreamOptions())
            events = await run(stream, AUDIO, pause_after=9 if pause else None,
                               pause=1.5)  # past the idle timeout
            await up.fake.wait_closed()
        assert final_text(events) == BECKETT_TEXT
        return [w.end for f in finals(events) for w in f.words]

    assert await word_ends(True) == pytest.approx(await word_ends(False), abs=0.01)


FAULTS: list[tuple[str, type[ProviderError], object]] = [
    ("rate_limit", ProviderRateLimited, 429),
    ("server_error", ProviderUnavailable, 503),
    ("error", ProviderUnavailable, "INTERNAL_SERVER_ERROR"),
    ("close_no_code", ProviderProtocolError, 1005),
    ("drop", ProviderConnectionLost, None),  # lost is 4502 for every provider
    ("malformed", ProviderProtocolError, "malformed"),
    ("stall", ProviderTimeout, None),
]


@pytest.mark.parametrize(("fault", "kind", "code"), FAULTS, ids=[f for f, _, _ in FAULTS])
async def test_faults_map_to_the_error_tree(fault: str, kind: type[ProviderError],
                                            code: object) -> None:
    error = await stream_through("deepgram", fault, model="flux-general-en", seconds=4.5)
    assert type(error) is kind, repr(error)
    assert error.provider == "deepgram"
    if code is not None:
        assert error.code == code


async def test_wrong_key_fails_the_start() -> None:
    async with upstream("deepgram", model="flux-general-en", api_key="revoked") as up:
        stream = up.adapter.open_stream(up.model, StreamOptions())
        with pytest.raises(ProviderAuthError):
            await stream.start()
        await stream.aclose()


@pytest.mark.filterwarnings(
    "ignore:websockets.exceptions.InvalidStatusCode is deprecated:DeprecationWarning")
async def test_the_official_sdk_drives_the_flux_fake() -> None:
    """deepgram-sdk's ``listen.v2`` client connects to the fake, streams and reads TurnInfo."""
    from deepgram import AsyncDeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

    async with upstream("deepgram", model="flux-general-en") as up:
        http = up.base_url.replace("ws", "http", 1)
        env = DeepgramClientEnvironment(base=http, production=up.base_url, agent=up.base_url,
                                        agent_rest=http)
        client = AsyncDeepgramClient(api_key="dg-test-key", environment=env)
        received: list[object] = []
        async with client.listen.v2.connect(model="flux-general-en", encoding="linear16",
                                            sample_rate=16000) as socket:
            for i in range(0, len(AUDIO), 2560):
                await socket.send_media(AUDIO[i:i + 2560])
            async with asyncio.timeout(10):
                while True:
                    message = await socket.recv()
                    received.append(message)
                    if getattr(message, "event", None) == "EndOfTurn" and getattr(
                            message, "transcript", "").endswith("better."):
                        break
        await up.fake.wait_closed()
    events = [getattr(m, "event", None) for m in received]
    assert type(received[0]).__name__ == "ListenV2Connected"
    assert {"StartOfTurn", "Update", "EndOfTurn"} <= set(events)


async def test_force_end_turn_overtaken_by_a_natural_end_of_turn_still_closes() -> None:
    """The turn ends by itself (EndOfTurn, trigger model) before Flux reads our ForceEndTurn,
    which then has nothing to end and gets no answer: once Flux has reported on all the audio
    sent before it, the stream goes on to CloseStream, without waiting for the deadline."""
    from adapters.base import AdapterContext
    from adapters.deepgram_flux import FluxStream

    stream = FluxStream("flux-general-en", StreamOptions(), AdapterContext(flush_timeout=30))
    sent: list[str] = []

    async def send_json(message: dict[str, object]) -> None:
        sent.append(str(message["type"]))

    stream._send_json = send_json  # type: ignore[method-assign]
    stream._clock.advance(3.0)  # 3 s of audio went out
    turn = {"type": "TurnInfo", "turn_index": 0, "audio_window_start": 0.5,
            "transcript": "Ever tried.", "end_of_turn_confidence": 0.3,
            "words": [{"word": "Ever", "confidence": 0.9, "start": 0.6, "end": 0.9},
                      {"word": "tried.", "confidence": 0.9, "start": 1.0, "end": 1.5}]}
    try:
        await stream._on_message({**turn, "event": "StartOfTurn", "audio_window_end": 1.5})
        await stream.close_stream()
        assert sent == ["ForceEndTurn"]
        await stream._on_message({**turn, "event": "EndOfTurn", "trigger": "model",
                                  "audio_window_end": 2.0})
        assert sent == ["ForceEndTurn"]  # covers 2.0 s of 3: not the answer
        await stream._on_message({"type": "TurnInfo", "event": "Update", "turn_index": 1,
                                  "audio_window_start": 2.0, "audio_window_end": 2.6,
                                  "transcript": "", "words": []})
        assert sent == ["ForceEndTurn"]  # not all the audio yet
        await stream._on_message({"type": "TurnInfo", "event": "Update", "turn_index": 1,
                                  "audio_window_start": 2.0, "audio_window_end": 3.0,
                                  "transcript": "", "words": []})
        assert sent == ["ForceEndTurn", "CloseStream"]
        events = []
        while not stream._events.empty():
            events.append(stream._events.get_nowait())
        assert [e.text for e in events if isinstance(e, Transcript) and e.is_final] == [
            "Ever tried."]
    finally:
        await stream.aclose()
