"""The adapter contract, run over every adapter: the five cloud providers (each against its
fake) and the local engine (the real tiny.en model on real speech)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from adapters.base import (
    Adapter,
    AdapterContext,
    Finalized,
    ModelNotFound,
    ProviderAuthError,
    ProviderError,
    StreamEvent,
    StreamOptions,
    SttStream,
    Transcript,
)
from tests.fakes.driver import check_segments, final_text, finalized_after_finals, run
from tests.fakes.providers import CLOUD, upstream
from tests.speech import BECKETT_TEXT, pcm, wer

# The local engine runs the real model on speech: `slow` (not in `make test-fast`).
PROVIDERS = [*CLOUD, pytest.param("local", marks=pytest.mark.slow)]


@dataclass
class Subject:
    provider: str
    adapter: Adapter
    model: str
    rate: int
    upstreams_closed: Callable[[], Awaitable[None]]
    exact: bool  # a fake answers with the known text; the real model is judged by WER

    def open(self, **options: object) -> SttStream:
        return self.adapter.open_stream(self.model,
                                        StreamOptions(sample_rate=self.rate, **options))  # type: ignore[arg-type]

    @property
    def audio(self) -> bytes:
        return pcm("beckett.wav", self.rate)

    def check_text(self, events: list[StreamEvent]) -> None:
        text = final_text(events)
        if self.exact:
            assert text == BECKETT_TEXT
        else:
            assert wer(BECKETT_TEXT, text) < 0.35, text

    @property
    def interim(self) -> bool:
        return self.adapter.capabilities(self.model).interim_results


@contextlib.asynccontextmanager
async def subject(provider: str) -> AsyncIterator[Subject]:
    if provider == "local":
        from adapters.local.adapter import LocalAdapter

        local = LocalAdapter(AdapterContext())
        try:
            yield Subject("local", local, "tiny.en", 16000, _nothing_open, exact=False)
        finally:
            await local.aclose()
        return
    async with upstream(provider) as up:
        yield Subject(provider, up.adapter, up.model, up.rate, up.sessions_closed, exact=True)


async def _nothing_open() -> None:
    """The local engine holds no upstream connection."""


@pytest.fixture(params=PROVIDERS)
async def subj(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    async with subject(request.param) as s:
        yield s


async def test_transcribes_and_close_stream_flushes_the_tail(subj: Subject) -> None:
    events = await run(subj.open(), subj.audio, rate=subj.rate)
    subj.check_text(events)
    # The last sentence is only complete once the tail was flushed by close_stream.
    assert final_text(events).rstrip(".").split()[-1].lower() == "better"
    async with asyncio.timeout(5):
        await subj.upstreams_closed()


async def test_partials_come_before_their_final_with_the_same_segment_id(subj: Subject) -> None:
    # Real time, as a live client sends: engines that decode on a clock (local) need it.
    four_seconds = subj.audio[: subj.rate * 2 * 4]
    events = await run(subj.open(interim_results=subj.interim), four_seconds, rate=subj.rate,
                       realtime=True)
    check_segments(events)
    transcripts = [e for e in events if isinstance(e, Transcript)]
    finals = {t.segment_id for t in transcripts if t.is_final}
    partials = [t for t in transcripts if not t.is_final]
    if subj.interim:
        assert partials and all(p.segment_id in finals for p in partials if p.text)
    else:
        assert not partials


async def test_finalize_emits_finals_then_finalized(subj: Subject) -> None:
    events = await run(subj.open(), subj.audio, rate=subj.rate, finalize_after=28)
    index = finalized_after_finals(events)
    assert sum(isinstance(e, Finalized) for e in events) == 1
    # At 2.8 s the second "Ever" has been heard (by every fake and in the real speech): the
    # finalize must have turned the segment holding it into a final before answering.
    before = " ".join(e.text for e in events[:index] if isinstance(e, Transcript) and e.is_final)
    assert before.lower().split().count("ever") >= 2, before
    subj.check_text(events)


async def test_finalize_with_nothing_pending_is_acknowledged(subj: Subject) -> None:
    stream = subj.open()
    await stream.start()
    try:
        events = stream.events()
        await stream.finalize()
        async with asyncio.timeout(5):
            first = await anext(events)
        assert isinstance(first, Finalized)
    finally:
        await stream.aclose()


async def test_aclose_is_idempotent_and_closes_upstream(subj: Subject) -> None:
    stream = subj.open()
    await stream.start()
    await stream.send_audio(subj.audio[: subj.rate * 2])
    await stream.aclose()
    await stream.aclose()
    seen = [e async for e in stream.events()]  # ends at once after aclose
    assert all(not isinstance(e, ProviderError) for e in seen)
    async with asyncio.timeout(5):
        await subj.upstreams_closed()
    with pytest.raises(ProviderError):
        await stream.send_audio(b"\0\0" * 160)


async def test_start_failures_are_provider_errors(subj: Subject) -> None:
    if subj.provider == "local":
        with pytest.raises(ModelNotFound):
            subj.adapter.open_stream("no-such-model", StreamOptions())
        return
    async with upstream(subj.provider, api_key="wrong-key") as bad:
        stream = bad.adapter.open_stream(bad.model, StreamOptions(sample_rate=bad.rate))
        with pytest.raises(ProviderAuthError):
            await stream.start()
        await stream.aclose()
        async with asyncio.timeout(5):
            await bad.sessions_closed()
