"""The streaming adapters keep their promises under speed and faults, through the fakes.

- a long recording sent as fast as allowed ends normally with its last words, however long the
  provider takes to work through it, as long as it keeps answering;
- a provider that stalls while audio flows is declared dead within its window + 3 s, and a
  caller blocked sending audio to it is released;
- a provider that answers nothing but pongs is alive;
- one unusable message is skipped, a stream of them is fatal;
- the end-of-stream message reaches the provider on every exit path;
- a dropped connection is 4502 for every provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from adapters.base import (
    ProviderConnectionLost,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    StreamEvent,
    StreamOptions,
    SttStream,
    Transcript,
)
from app.errors import to_gateway_error
from tests.fakes._server import BECKETT_SECONDS
from tests.fakes.driver import check_segments, error_of, final_text, run
from tests.fakes.providers import Upstream, upstream
from tests.speech import BECKETT_TEXT, pcm

STREAMING = ["deepgram", "assemblyai", "openai", "gladia"]
REPEAT = 5  # 5 x 10 s of speech: a 50 s recording


def long_audio(rate: int, times: int = REPEAT) -> bytes:
    return pcm("beckett.wav", rate) * times


def long_text(times: int = REPEAT) -> str:
    return " ".join([BECKETT_TEXT] * times)


@contextlib.asynccontextmanager
async def speedy(provider: str, times: int, **kw: object) -> AsyncIterator[Upstream]:
    """The provider's fake for a `times`-long Beckett recording; AssemblyAI (paced to real
    time by the adapter) runs on a clock 10x faster, for the adapter and the fake alike."""
    fake_kw: dict[str, object] = {"text": long_text(times),
                                  "speech_seconds": BECKETT_SECONDS * times}
    if provider == "assemblyai":
        from adapters.assemblyai import AssemblyAIStream

        fake_kw["clock_scale"] = 10.0
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(AssemblyAIStream, "pace", 10.0)
            async with upstream(provider, **fake_kw, **kw) as up:  # type: ignore[arg-type]
                yield up
        return
    async with upstream(provider, **fake_kw, **kw) as up:  # type: ignore[arg-type]
        yield up


def opened(up: Upstream, **options: object) -> SttStream:
    return up.adapter.open_stream(up.model, StreamOptions(sample_rate=up.rate,
                                                          **options))  # type: ignore[arg-type]


# ------------------------------------------------------------------ bounded by progress


@pytest.mark.parametrize("provider", STREAMING)
async def test_fast_long_recording_ends_with_its_last_words(provider: str) -> None:
    """50 s sent at once to a provider that transcribes at 3x real time: it keeps answering
    for ~15 s after the end of stream, far beyond the 2 s allowed *without progress*."""
    speed = None if provider == "assemblyai" else 3.0
    async with speedy(provider, REPEAT, flush_timeout=2.0,
                      **({"speed": speed} if speed else {})) as up:
        events = await run(opened(up), long_audio(up.rate), rate=up.rate, within=90)
        async with asyncio.timeout(5):
            await up.sessions_closed()
    assert final_text(events) == long_text()
    assert final_text(events).endswith("Fail better.")
    check_segments(events)


async def test_ten_minutes_to_the_paced_assemblyai_model_end_normally() -> None:
    """A 10-minute file sent as fast as allowed: the adapter paces it (here on a clock 20x
    faster, adapter and fake alike) and the stream ends with every word."""
    from adapters.assemblyai import AssemblyAIStream

    times = 60  # 60 x 10 s
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AssemblyAIStream, "pace", 20.0)
        async with upstream("assemblyai", text=long_text(times),
                            speech_seconds=BECKETT_SECONDS * times, clock_scale=20.0,
                            flush_timeout=2.0, stall_timeout=2.0) as up:
            events = await run(opened(up), long_audio(up.rate, times), rate=up.rate,
                               frame_ms=1000, within=120)
            log = await up.fake.wait_closed()
    assert final_text(events) == long_text(times)
    assert log.types()[-1] == "Terminate" and log.close_code == 1000


# --------------------------------------------------------------------------- stalls


def _bytes_for(provider: str, rate: int, seconds: float) -> int:
    """Bytes on the wire for `seconds` of audio (OpenAI sends base64 inside JSON)."""
    raw = int(seconds * rate * 2)
    return raw * 4 // 3 if provider == "openai" else raw


@pytest.mark.parametrize("provider", STREAMING)
async def test_a_stall_while_audio_flows_is_detected_within_the_window(provider: str) -> None:
    window = 2.0
    async with upstream(provider, proxy=True, stall_timeout=window, flush_timeout=5.0) as up:
        assert up.proxy is not None
        up.proxy.stall_after(_bytes_for(provider, up.rate, 2.0))
        stream = opened(up)
        await stream.start()
        events: list[StreamEvent] = []

        async def consume() -> None:
            async for event in stream.events():
                events.append(event)

        async def send() -> None:
            # A live source that never ends, as fast as allowed: it fills the dead link and
            # blocks in send_audio; the failure must release it.
            audio = pcm("beckett.wav", up.rate)
            while True:
                for i in range(0, len(audio), up.rate // 5):
                    await stream.send_audio(audio[i:i + up.rate // 5])

        reader = asyncio.create_task(consume())
        sender = asyncio.create_task(send())
        try:
            async with asyncio.timeout(30):
                await up.proxy.stalled.wait()
            async with asyncio.timeout(window + 3):
                with pytest.raises(ProviderTimeout) as err:
                    await reader
            # The caller blocked on the dead link is released too, with the same error.
            async with asyncio.timeout(10):
                with pytest.raises(ProviderError):
                    await sender
        finally:
            for task in (reader, sender):
                task.cancel()
            await stream.aclose()
    assert err.value.code == "stalled" and err.value.retryable
    assert to_gateway_error(err.value).close_code == 4504
    assert not stream._tasks  # watchdog, reader, pings, sender: all gone
    ws = getattr(stream, "_ws", None)
    assert ws is None or ws.close_code is not None or ws.state.name == "CLOSED"


async def test_a_provider_answering_only_pongs_is_alive() -> None:
    """Seconds of digital silence: the Deepgram fake says nothing, but answers our pings."""
    silence = bytes(32000 * 5)  # 5 s, two and a half stall windows
    async with upstream("deepgram", stall_timeout=2.0, flush_timeout=3.0) as up:
        stream = opened(up)
        await stream.start()
        collected: list[StreamEvent] = []
        reader = asyncio.create_task(_collect(stream, collected))
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(0, len(silence), 3200):  # real time: 100 ms per frame
                await asyncio.sleep(max(0.0, start + i / 32000 - loop.time()))
                await stream.send_audio(silence[i:i + 3200])
            audio = pcm("beckett.wav")
            for i in range(0, len(audio), 3200):
                await stream.send_audio(audio[i:i + 3200])
            await stream.close_stream()
            async with asyncio.timeout(20):
                await reader
        finally:
            await stream.aclose()
    assert final_text(collected) == BECKETT_TEXT


async def _collect(stream: SttStream, into: list[StreamEvent]) -> None:
    async for event in stream.events():
        into.append(event)


# --------------------------------------------------------------------------- garbage


@pytest.mark.parametrize("provider", STREAMING)
async def test_one_unusable_message_is_logged_and_skipped(
        provider: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="adapters._ws")
    async with upstream(provider, fault="garbage_once") as up:
        events = await run(opened(up), pcm("beckett.wav", up.rate), rate=up.rate)
    assert final_text(events) == BECKETT_TEXT
    skipped = [r for r in caplog.records if "unusable upstream message" in r.getMessage()]
    assert len(skipped) == 2  # the non-JSON text and the message missing its fields
    assert any("not JSON" in r.getMessage() for r in skipped)


def test_logged_messages_and_reasons_are_redacted() -> None:
    from websockets.exceptions import InvalidURI

    from adapters.errors import map_transport_exception, redact

    text = redact('{"token": "abcdef123456", "url": "wss://x/live?token=s3cr3tvalue"} dg-key',
                  "dg-key")
    assert "abcdef123456" not in text and "s3cr3tvalue" not in text and "dg-key" not in text
    error = map_transport_exception(InvalidURI("htp://x/v2/live?token=s3cr3tvalue", "scheme"),
                                    "gladia")
    assert error is not None and "s3cr3tvalue" not in str(error)


# ------------------------------------------------------------ end of stream, every exit


EOS = {"deepgram": "CloseStream", "assemblyai": "Terminate", "gladia": "stop_recording"}


async def _eos_reached(up: Upstream) -> None:
    """The provider got its end-of-stream message (OpenAI has none: a 1000 close is it)."""
    log = await up.fake.wait_closed(within=10)
    if up.provider == "openai":
        assert log.close_code == 1000, log.close_code
    else:
        assert EOS[up.provider] in log.types(), log.types()


@pytest.mark.parametrize("provider", STREAMING)
async def test_client_gone_mid_stream_tells_the_provider(provider: str) -> None:
    async with upstream(provider) as up:
        stream = opened(up)
        await stream.start()
        await stream.send_audio(pcm("beckett.wav", up.rate)[: up.rate * 2])
        await asyncio.sleep(0.3)
        await stream.aclose()  # the client left: no close_stream
        await _eos_reached(up)


@pytest.mark.parametrize("provider", STREAMING)
async def test_fatal_error_tells_the_provider(provider: str) -> None:
    """Repeated garbage ends the stream with an error; the provider still hears the end."""
    async with upstream(provider, fault="malformed") as up:
        with pytest.raises(ProviderProtocolError) as err:
            await run(opened(up), pcm("beckett.wav", up.rate)[: up.rate * 2 * 6], rate=up.rate)
        await _eos_reached(up)
    assert err.value.code == "malformed"


# --------------------------------------------------------------------------- drops


@pytest.mark.parametrize("provider", STREAMING)
async def test_a_dropped_connection_is_4502_for_every_provider(provider: str) -> None:
    async with upstream(provider, proxy=True) as up:
        assert up.proxy is not None
        stream = opened(up)
        await stream.start()
        try:
            await stream.send_audio(pcm("beckett.wav", up.rate)[: up.rate * 2])
            up.proxy.drop()
            error = await error_of(stream, ProviderConnectionLost)
        finally:
            await stream.aclose()
    assert error.retryable and to_gateway_error(error).close_code == 4502


async def test_deepgram_delivers_final_pieces_when_the_stream_fails() -> None:
    """`is_final` pieces received before a failure are settled text: they arrive as a final
    before the error, though `speech_final` never came."""
    text = "Ever tried and failed and tried again and failed better."
    async with upstream("deepgram", fault="drop_after_piece", text=text,
                        speech_seconds=BECKETT_SECONDS) as up:
        events: list[StreamEvent] = []
        stream = opened(up)
        with pytest.raises(ProviderTimeout):
            await stream.start()
            try:
                await stream.send_audio(pcm("beckett.wav"))
                async with asyncio.timeout(10):
                    async for event in stream.events():
                        events.append(event)
            finally:
                await stream.aclose()
    finals = [e for e in events if isinstance(e, Transcript) and e.is_final]
    assert finals and finals[0].text == "Ever tried and"
