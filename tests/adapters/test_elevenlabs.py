"""ElevenLabs Scribe v2 Realtime: the URL and chunk messages, committed transcripts with words,
finalize by manual commit, keepalive silence taken back out of the timestamps, every error
message type mapped, and the fake proven against the official ``elevenlabs`` SDK."""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import parse_qs, urlsplit

import pytest

from adapters._silence import SilenceClock
from adapters.base import (
    Finalized,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionLost,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    StreamOptions,
    Transcript,
)
from adapters.elevenlabs import ERRORS, error_of, parse_committed, ws_url
from tests.fakes.driver import check_segments, final_text, finals, run
from tests.fakes.providers import stream_through, upstream
from tests.speech import BECKETT_TEXT, pcm

AUDIO = pcm("beckett.wav")


def test_url_carries_the_options_and_derives_the_websocket_from_the_rest_base() -> None:
    url = ws_url("https://api.elevenlabs.io", "scribe_v2_realtime", StreamOptions(
        language="auto", custom_vocabulary=("Beckett", "Worstward")))
    parts = urlsplit(url)
    assert parts.scheme == "wss" and parts.netloc == "api.elevenlabs.io"
    assert parts.path == "/v1/speech-to-text/realtime"
    query = parse_qs(parts.query)
    assert query["model_id"] == ["scribe_v2_realtime"] and query["audio_format"] == ["pcm_16000"]
    assert query["commit_strategy"] == ["vad"] and query["include_timestamps"] == ["true"]
    assert query["include_language_detection"] == ["true"] and "language_code" not in query
    assert query["keyterms"] == ["Beckett", "Worstward"]
    assert "xi-api-key" not in url and "token" not in query
    assert parse_qs(urlsplit(ws_url("http://h:1/base/", "m", StreamOptions(language="fr")))
                    .query)["language_code"] == ["fr"]


def test_committed_words_glue_punctuation_and_drop_spacing() -> None:
    committed = parse_committed({
        "message_type": "committed_transcript_with_timestamps", "text": "Ever tried.",
        "language_code": "en", "words": [
            {"text": "Ever", "start": 0.1, "end": 0.4, "type": "word", "logprob": 0.0},
            {"text": " ", "start": 0.4, "end": 0.5, "type": "spacing"},
            {"text": "tried", "start": 0.5, "end": 0.9, "type": "word", "speaker_id": "s1"},
            {"text": ".", "start": 0.9, "end": 0.9, "type": "punctuation"}]})
    assert committed.text == "Ever tried." and committed.language == "en"
    assert [(w.word, w.start, w.end) for w in committed.words] == [("Ever", 0.1, 0.4),
                                                                   ("tried.", 0.5, 0.9)]
    assert committed.words[0].confidence == 1.0 and committed.words[1].speaker == "s1"


def test_silence_clock_takes_inserted_silence_back_out() -> None:
    clock = SilenceClock()
    clock.advance(2.0)
    clock.advance(0.1, inserted=True)
    clock.advance(0.1, inserted=True)
    clock.advance(1.0)
    assert clock.to_stream(1.5) == 1.5
    assert clock.to_stream(2.05) == 2.0  # inside the silence: its start
    assert clock.to_stream(2.7) == 2.5


@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_every_error_message_type_maps(kind: str) -> None:
    error = error_of({"message_type": kind, "error": "why it failed"})
    assert error is not None and error.code == kind and error.provider == "elevenlabs"
    assert "why it failed" in error.message
    expected = {"quota_exceeded": ProviderAuthError, "auth_error": ProviderAuthError,
                "rate_limited": ProviderRateLimited, "invalid_request": ProviderBadRequest,
                "insufficient_audio_activity": ProviderTimeout}
    if kind in expected:
        assert type(error) is expected[kind]
    assert error_of({"message_type": "partial_transcript", "text": "x"}) is None


async def test_stream_speaks_the_protocol() -> None:
    async with upstream("elevenlabs") as up:
        stream = up.adapter.open_stream(up.model, StreamOptions(
            initial_prompt="Samuel Beckett, Worstward Ho", custom_vocabulary=("Beckett",)))
        events = await run(stream, AUDIO)
        log = await up.fake.wait_closed()
    assert final_text(events) == BECKETT_TEXT
    check_segments(events)
    assert len(finals(events)) == BECKETT_TEXT.count(".")  # one per VAD commit
    words = [w for f in finals(events) for w in f.words]
    assert " ".join(w.word for w in words) == BECKETT_TEXT
    assert log.headers["xi-api-key"] == "xi-test-key"
    assert log.query["keyterms"] == ["Beckett"]
    chunks = [m for m in log.messages if m["message_type"] == "input_audio_chunk"]
    assert chunks[0]["previous_text"] == "Samuel Beckett, Worstward Ho"
    assert all("previous_text" not in c for c in chunks[1:])
    assert log.audio_bytes == len(AUDIO)
    assert sum(len(base64.b64decode(c["audio_base_64"])) for c in chunks) == len(AUDIO)
    assert chunks[-1]["commit"] is True  # the tail committed before we closed
    assert log.close_code == 1000


@pytest.mark.parametrize("answer_empty_commits", [True, False])
async def test_the_end_of_stream_needs_no_answer_to_an_empty_commit(
        answer_empty_commits: bool) -> None:
    """The audio ends right after "better.", which VAD commits; the closing commit then has
    nothing new, and whether or not ElevenLabs answers it, the stream ends cleanly."""
    async with upstream("elevenlabs", answer_empty_commits=answer_empty_commits) as up:
        stream = up.adapter.open_stream(up.model, StreamOptions())
        events = await run(stream, AUDIO, within=15)
        log = await up.fake.wait_closed()
    assert final_text(events) == BECKETT_TEXT
    assert log.close_code == 1000 and log.messages[-1]["commit"] is True


async def test_finalize_commits_and_is_answered_after_its_final() -> None:
    async with upstream("elevenlabs") as up:
        stream = up.adapter.open_stream(up.model, StreamOptions())
        events = await run(stream, AUDIO[: 25 * 3200], finalize_after=25)
        log = await up.fake.wait_closed()
    commits = [m for m in log.messages if m.get("commit")]
    assert len(commits) == 1  # finalize committed; nothing new was sent before the close
    index = next(i for i, e in enumerate(events) if isinstance(e, Finalized))
    assert any(isinstance(e, Transcript) and e.is_final for e in events[:index])
    assert not any(isinstance(e, Transcript) for e in events[index + 1:])


async def test_keepalive_silence_is_taken_out_of_the_timestamps() -> None:
    async def word_ends(pause: bool) -> list[float]:
        async with upstream("elevenlabs", idle_timeout=0.6,
                            keepalive_interval=0.2) as up:
            stream = up.adapter.open_stream(up.model, StreamOptions())
            events = await run(stream, AUDIO, pause_after=11 if pause else None,
                               pause=1.5)  # past the idle timeout: keepalives go out
            log = await up.fake.wait_closed()
            if pause:
                assert log.audio_bytes > len(AUDIO)  # silence was inserted
        assert final_text(events) == BECKETT_TEXT
        return [w.end for f in finals(events) for w in f.words]

    assert await word_ends(True) == pytest.approx(await word_ends(False), abs=0.01)


async def test_too_many_or_too_long_keyterms_are_refused_before_connecting() -> None:
    async with upstream("elevenlabs") as up:
        stream = up.adapter.open_stream(up.model, StreamOptions(
            custom_vocabulary=("a term that is far too long for scribe",)))
        with pytest.raises(ProviderBadRequest, match="at most 20 characters"):
            await stream.start()
        await stream.aclose()
        assert up.fake.sessions == []


FAULTS: list[tuple[str, type[ProviderError], str | None]] = [
    ("quota", ProviderAuthError, "quota_exceeded"),
    ("rate_limit", ProviderRateLimited, "rate_limited"),
    ("server_error", ProviderUnavailable, "transcriber_error"),
    ("drop", ProviderConnectionLost, None),  # lost is 4502 for every provider
    ("malformed", ProviderProtocolError, "malformed"),
    ("stall", ProviderTimeout, None),
]


@pytest.mark.parametrize(("fault", "kind", "code"), FAULTS, ids=[f for f, _, _ in FAULTS])
async def test_faults_map_to_the_error_tree(fault: str, kind: type[ProviderError],
                                            code: str | None) -> None:
    # Cut inside "No matter.": a tail is still open when the stream ends.
    error = await stream_through("elevenlabs", fault, seconds=4.5)
    assert type(error) is kind, repr(error)
    if code is not None:
        assert error.code == code
    if fault == "quota":  # the reason reaches the client
        assert "exceeded your quota" in str(error)


async def test_the_official_sdk_drives_the_fake() -> None:
    """The fake speaks what the `elevenlabs` SDK speaks: its realtime client connects,
    streams, commits and receives the committed transcripts with timestamps."""
    from elevenlabs.realtime import AudioFormat, CommitStrategy, RealtimeEvents, ScribeRealtime

    async with upstream("elevenlabs") as up:
        scribe = ScribeRealtime(api_key="xi-test-key", base_url=up.fake.http_url)
        connection = await scribe.connect({
            "model_id": "scribe_v2_realtime", "audio_format": AudioFormat.PCM_16000,
            "sample_rate": 16000, "commit_strategy": CommitStrategy.MANUAL,
            "include_timestamps": True, "language_code": "en"})
        seen: dict[str, list[dict[str, object]]] = {}
        done = asyncio.Event()
        for event in (RealtimeEvents.SESSION_STARTED, RealtimeEvents.PARTIAL_TRANSCRIPT,
                      RealtimeEvents.COMMITTED_TRANSCRIPT_WITH_TIMESTAMPS,
                      RealtimeEvents.ERROR):
            def handler(data: dict[str, object], name: str = event.value) -> None:
                seen.setdefault(name, []).append(data)
                if name == "committed_transcript_with_timestamps":
                    done.set()
            connection.on(event, handler)
        try:
            for i in range(0, len(AUDIO), 8192):
                await connection.send({"audio_base_64": base64.b64encode(
                    AUDIO[i:i + 8192]).decode()})
            await connection.commit()
            async with asyncio.timeout(10):
                await done.wait()
        finally:
            await connection.close()
        log = await up.fake.wait_closed()
    assert "error" not in seen, seen.get("error")
    assert seen["session_started"][0]["config"]["model_id"] == "scribe_v2_realtime"
    assert seen["partial_transcript"]
    [committed] = seen["committed_transcript_with_timestamps"]  # manual: one commit
    assert committed["text"] == BECKETT_TEXT
    assert log.audio_bytes == len(AUDIO)
