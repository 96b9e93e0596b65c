"""Soniox: the config message, token segmentation, finalize via ``<fin>``, keepalive, the end of
audio, and every error the fake injects, each judged on what the client gets and what the fake
still holds open."""

from __future__ import annotations

import asyncio

import pytest

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
    ProviderUsage,
    StreamOptions,
    Transcript,
)
from adapters.soniox import Segmenter, config_message, error_message, parse_tokens
from tests.fakes.driver import check_segments, error_of, final_text, finals, run
from tests.fakes.providers import stream_through, upstream
from tests.speech import BECKETT_TEXT, pcm

AUDIO = pcm("beckett.wav")


def _tok(text: str, final: bool, start: int = 0, end: int = 0) -> dict[str, object]:
    return {"text": text, "start_ms": start, "end_ms": end, "confidence": 0.9,
            "is_final": final}


def test_tokens_become_words_and_segments_at_end_markers() -> None:
    seg = Segmenter()
    events, fin = seg.feed(parse_tokens({"tokens": [
        _tok("Hel", True, 0, 100), _tok("lo", True, 100, 200), _tok(" wor", False, 300, 400)]}))
    assert not fin
    [partial] = events
    assert isinstance(partial, Transcript) and not partial.is_final
    assert partial.text == "Hello wor" and [w.word for w in partial.words] == ["Hello", "wor"]
    assert partial.words[0].start == 0.0 and partial.words[0].end == 0.2
    # Non-final tokens are re-sent and may change; finals are sent once.
    events, fin = seg.feed(parse_tokens({"tokens": [
        _tok(" world.", True, 300, 500), _tok("<end>", True, 500, 500),
        _tok(" Next", False, 600, 700)]}))
    final, next_partial = events
    assert isinstance(final, Transcript) and final.is_final and final.text == "Hello world."
    assert final.segment_id == partial.segment_id
    assert isinstance(next_partial, Transcript) and next_partial.segment_id != final.segment_id
    assert next_partial.text == "Next"
    events, fin = seg.feed(parse_tokens({"tokens": [_tok(" Next", True, 600, 700),
                                                    _tok("<fin>", True, 700, 700)]}))
    assert fin and [e.text for e in events if isinstance(e, Transcript)] == ["Next"]
    assert seg.flush() == []  # nothing left open


def test_config_carries_options_and_never_the_key() -> None:
    options = StreamOptions(language="auto", diarization=True, initial_prompt="A play by Beckett",
                            custom_vocabulary=("Worstward Ho",), sample_rate=16000)
    config = config_message("stt-rt-v4", options)
    assert "api_key" not in config
    assert config["audio_format"] == "pcm_s16le" and config["sample_rate"] == 16000
    assert config["num_channels"] == 1 and config["enable_endpoint_detection"] is True
    assert config["enable_speaker_diarization"] is True
    assert config["enable_language_identification"] is True and "language_hints" not in config
    assert config["context"] == {"text": "A play by Beckett", "terms": ["Worstward Ho"]}
    plain = config_message("stt-rt-v5", StreamOptions(language="de"))
    assert plain["language_hints"] == ["de"] and "context" not in plain


@pytest.mark.parametrize(("code", "kind"), [(400, ProviderBadRequest), (401, ProviderAuthError),
                                            (402, ProviderAuthError), (408, ProviderTimeout),
                                            (429, ProviderRateLimited),
                                            (503, ProviderUnavailable)])
def test_error_messages_map_to_the_tree(code: int, kind: type[ProviderError]) -> None:
    error = error_message({"error_code": code, "error_message": "boom"})
    assert type(error) is kind and error.code == code and error.provider == "soniox"


async def test_stream_speaks_the_protocol_and_reports_usage() -> None:
    async with upstream("soniox") as up:
        stream = up.adapter.open_stream(up.model, StreamOptions(
            diarization=True, custom_vocabulary=("Beckett",)))
        events = await run(stream, AUDIO)
        log = await up.fake.wait_closed()
    assert final_text(events) == BECKETT_TEXT
    check_segments(events)
    # One final per sentence (grouped at `<end>`), words carry sub-word tokens merged.
    assert len(finals(events)) == BECKETT_TEXT.count(".")
    assert all(w.speaker == "1" for f in finals(events) for w in f.words)
    usage = [e for e in events if isinstance(e, ProviderUsage)]
    assert usage and usage[0].audio_seconds == pytest.approx(len(AUDIO) / 32000, abs=0.01)
    config = log.messages[0]
    assert config["model"] == "stt-rt-v4" and config["context"] == {"terms": ["Beckett"]}
    assert log.headers["authorization"] == "Bearer soniox-test-key"
    assert log.audio_bytes == len(AUDIO)  # every byte, and the empty end frame not counted
    assert log.close_code == 1000


async def test_finalize_is_answered_by_the_fin_token() -> None:
    async with upstream("soniox") as up:
        stream = up.adapter.open_stream(up.model, StreamOptions())
        events = await run(stream, AUDIO[: 25 * 3200], finalize_after=25)
        log = await up.fake.wait_closed()
    assert log.types().count("finalize") == 1
    index = next(i for i, e in enumerate(events) if isinstance(e, Finalized))
    before = [e for e in events[:index] if isinstance(e, Transcript) and e.is_final]
    assert before and not any(isinstance(e, Transcript) for e in events[index + 1:])


async def test_keepalive_holds_a_silent_client_past_the_idle_timeout() -> None:
    async with upstream("soniox", idle_timeout=0.6, keepalive_interval=0.2) as up:
        stream = up.adapter.open_stream(up.model, StreamOptions())
        # silent for more than twice the idle timeout after 1 s of audio
        events = await run(stream, AUDIO, pause_after=10, pause=1.5)
        log = await up.fake.wait_closed()
    assert log.types().count("keepalive") >= 3
    assert final_text(events) == BECKETT_TEXT


async def test_idle_timeout_without_keepalive_is_a_timeout() -> None:
    async with upstream("soniox", idle_timeout=0.3, keepalive_interval=30) as up:
        stream = up.adapter.open_stream(up.model, StreamOptions())
        await stream.start()
        try:
            error = await error_of(stream, ProviderTimeout)
        finally:
            await stream.aclose()
        assert error.code == 408
        async with asyncio.timeout(5):
            await up.sessions_closed()


FAULTS: list[tuple[str, type[ProviderError], object]] = [
    ("rate_limit", ProviderRateLimited, 429),
    ("server_error", ProviderUnavailable, 503),
    ("drop", ProviderConnectionLost, None),  # lost is 4502 for every provider
    ("malformed", ProviderProtocolError, "malformed"),
    ("stall", ProviderTimeout, None),
]


@pytest.mark.parametrize(("fault", "kind", "code"), FAULTS, ids=[f for f, _, _ in FAULTS])
async def test_faults_map_to_the_error_tree(fault: str, kind: type[ProviderError],
                                            code: object) -> None:
    error = await stream_through("soniox", fault, seconds=5)
    assert type(error) is kind, repr(error)
    assert error.provider == "soniox"
    if code is not None:
        assert error.code == code
    if kind is ProviderRateLimited:
        assert error.retryable


async def test_the_fake_refuses_what_soniox_refuses() -> None:
    """The fake is strict: a key in the config message, raw PCM without its rate, audio before
    the config are all refused (so the adapter passing proves it does none of these)."""
    from websockets.asyncio.client import connect

    async with upstream("soniox") as up:
        url = f"{up.base_url}/transcribe-websocket"
        auth = {"Authorization": "Bearer soniox-test-key"}
        cases = [
            {"api_key": "soniox-test-key", "model": "stt-rt-v4", "audio_format": "auto"},
            {"model": "stt-rt-v4", "audio_format": "pcm_s16le"},
            {"model": "stt-rt-v1", "audio_format": "auto"},
            b"\0\0" * 160,
        ]
        import json

        for first in cases:
            async with connect(url, additional_headers=auth) as ws:
                await ws.send(first if isinstance(first, bytes) else json.dumps(first))
                answer = json.loads(await ws.recv())
            assert answer["error_code"] == 400, (first, answer)
        async with up.adapter.open_stream(up.model, StreamOptions()) as stream:
            await stream.send_audio(b"")  # never forwarded: Soniox reads it as end of audio
            await stream.send_audio(AUDIO[:3200])
        log = await up.fake.wait_closed()
    assert log.audio_bytes == 3200 and log.frames == 1
