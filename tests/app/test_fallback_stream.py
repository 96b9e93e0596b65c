"""`FallbackStream` on its own (scripted adapters, no server): every branch of fallback.

Each test asserts what the consumer of `events()` receives *and* what the candidate streams
were sent and whether they were closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from adapters.base import (
    Finalized,
    ModelNotFound,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderNotConfigured,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderSwitched,
    ProviderTimeout,
    ProviderUnavailable,
    StreamEvent,
    StreamOptions,
    Transcript,
)
from adapters.fallback import FallbackStream, Opened, switchable
from adapters.registry import ModelId
from tests.fakeadapter import RATE, FakeAdapter, Script, block_names, blocks

WAIT = 10.0  # bound on every wait in these tests


class Consumer:
    """Reads `events()` in a task, as the session does."""

    def __init__(self, stream: FallbackStream) -> None:
        self.events: list[StreamEvent] = []
        self.error: ProviderError | None = None
        self.task = asyncio.create_task(self._run(stream))

    async def _run(self, stream: FallbackStream) -> None:
        try:
            async for event in stream.events():
                self.events.append(event)
        except ProviderError as exc:
            self.error = exc

    async def done(self) -> None:
        await asyncio.wait_for(self.task, WAIT)

    def finals(self) -> list[Transcript]:
        return [e for e in self.events if isinstance(e, Transcript) and e.is_final]

    def heard(self) -> set[int]:
        return set().union(*(block_names(f.text) for f in self.finals()))

    def switches(self) -> list[ProviderSwitched]:
        return [e for e in self.events if isinstance(e, ProviderSwitched)]


def opener(adapter: FakeAdapter, opened: list[str] | None = None):  # type: ignore[no-untyped-def]
    async def open_(model: str) -> Opened:
        if opened is not None:
            opened.append(model)
        model_id = ModelId.parse(model)
        if model_id.provider != "fake":
            raise ModelNotFound(f"unknown model {model}")
        stream = adapter.open_stream(model_id.name, StreamOptions(sample_rate=RATE))
        try:
            await stream.start()
        except BaseException:
            await stream.aclose()
            raise
        return Opened(model, "fake", stream, lambda pcm, last: pcm)
    return open_


@asynccontextmanager
async def fallback(adapter: FakeAdapter, *models: str, replay_seconds: float = 300.0,
                   opened: list[str] | None = None) -> AsyncIterator[FallbackStream]:
    stream = FallbackStream(list(models or ("fake.a", "fake.b")), opener(adapter, opened),
                            StreamOptions(sample_rate=RATE), replay_seconds=replay_seconds)
    try:
        yield stream
    finally:
        await stream.aclose()


async def feed(stream: FallbackStream, first: int, count: int) -> None:
    for i in range(first, first + count):
        await asyncio.wait_for(stream.send_audio(blocks(1, i)), WAIT)


async def test_primary_serves_alone_in_its_own_times() -> None:
    fake = FakeAdapter()
    async with fallback(fake) as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 25)
        await stream.close_stream()
        await reader.done()
    assert reader.error is None and reader.switches() == []
    assert reader.heard() == set(range(25))
    assert [f.segment_id for f in reader.finals()] == ["seg0", "seg1", "seg2"]
    assert reader.finals()[1].start == 1.0
    assert [s.model for s in fake.streams] == ["a"]
    assert stream.seconds_by_model == {"fake.a": pytest.approx(2.5)}
    assert fake.stream_of("a").shut_down


@pytest.mark.parametrize("error", [
    ProviderNotConfigured("set FAKE_KEY", provider="fake"),
    ProviderUnavailable("unreachable", provider="fake"),
    ProviderAuthError("bad credentials", provider="fake"),
    ProviderTimeout("no answer", provider="fake"),
    ProviderProtocolError("dropped", provider="fake", retryable=True),
])
async def test_switchable_start_failure_opens_the_next(error: ProviderError) -> None:
    fake = FakeAdapter({"a": Script(fail_start=error), "b": Script()})
    async with fallback(fake) as stream:
        await stream.start()
        assert stream.serving.model_id == "fake.b"
        assert stream.first_error is error
        reader = Consumer(stream)
        await feed(stream, 0, 10)
        await stream.close_stream()
        await reader.done()
    assert reader.heard() == set(range(10))
    assert fake.stream_of("a").shut_down  # the failed start left nothing open


@pytest.mark.parametrize("error", [
    ProviderBadRequest("bad parameter", provider="fake"),
    ProviderRateLimited("slow down", provider="fake"),
    ProviderProtocolError("internal bug", provider="fake", retryable=False),
    ModelNotFound("no such model", provider="fake"),
])
async def test_non_switchable_start_failure_is_raised(error: ProviderError) -> None:
    fake = FakeAdapter({"a": Script(fail_start=error), "b": Script()})
    opened: list[str] = []
    async with fallback(fake, opened=opened) as stream:
        with pytest.raises(type(error)):
            await stream.start()
    assert opened == ["fake.a"]
    assert not switchable(error)


async def test_every_candidate_failing_to_start_raises_the_first_error() -> None:
    first = ProviderUnavailable("first down", provider="fake")
    fake = FakeAdapter({"a": Script(fail_start=first),
                        "b": Script(fail_start=ProviderUnavailable("second down"))})
    async with fallback(fake) as stream:
        with pytest.raises(ProviderUnavailable, match="first down"):
            await stream.start()


async def test_an_openers_own_error_reaches_the_caller_unwrapped() -> None:
    async def refuse(model: str) -> Opened:
        raise ValueError(f"{model} does not speak Klingon")

    stream = FallbackStream(["fake.a", "fake.b"], refuse, StreamOptions(sample_rate=RATE),
                            replay_seconds=300)
    with pytest.raises(ValueError, match="Klingon"):
        await stream.start()
    await stream.aclose()


async def test_mid_stream_failure_switches_and_replays_since_the_last_final() -> None:
    fake = FakeAdapter({"a": Script(fail_at=2.5), "b": Script()})
    async with fallback(fake) as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 40)
        await stream.close_stream()
        await reader.done()
    assert reader.error is None
    [switch] = reader.switches()
    assert (switch.from_model, switch.to_model) == ("fake.a", "fake.b")
    # From the last final (2.0 s) on; audio sent to the dead stream before the switch too.
    assert switch.replayed_seconds >= 0.5 and switch.lost_seconds == 0.0
    assert "fake upstream gone" in switch.reason
    assert reader.heard() == set(range(40)), "no block lost across the switch"
    after = reader.finals()[2:]
    assert all(f.segment_id.startswith("1-") for f in after)
    assert after[0].start == 2.0, "the new stream's t=0 is where the replay starts"
    starts = [f.start for f in reader.finals()]
    assert starts == sorted(starts)
    # Events in order: the switch notice before anything from the new model.
    index = reader.events.index(switch)
    assert all(not (isinstance(e, Transcript) and e.segment_id.startswith("1-"))
               for e in reader.events[:index])
    b = fake.stream_of("b")
    assert block_names_of(bytes(b.received)) == set(range(20, 40))
    assert fake.stream_of("a").shut_down, "the failed stream is closed"
    assert stream.seconds_by_model == {"fake.a": pytest.approx(2.5),
                                       "fake.b": pytest.approx(2.0)}


def block_names_of(pcm: bytes) -> set[int]:
    import numpy as np

    return {int(v) - 1 for v in set(np.frombuffer(pcm, dtype="<i2").tolist())}


async def test_replay_is_bounded_and_the_loss_is_reported() -> None:
    fake = FakeAdapter({"a": Script(final_every=100, fail_at=3.0), "b": Script()})
    async with fallback(fake, replay_seconds=1.0) as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 35)
        await stream.close_stream()
        await reader.done()
    [switch] = reader.switches()
    assert switch.replayed_seconds == 1.0
    # The failure is seen at 3.0 s (and audio sent before the switch is buffered too).
    assert switch.lost_seconds >= 2.0
    first = round(switch.lost_seconds * 10)
    assert reader.heard() == set(range(first, 35)), "all the buffer holds is replayed"
    assert reader.finals()[0].start == switch.lost_seconds


async def test_non_switchable_mid_stream_error_ends_the_stream() -> None:
    bad = ProviderBadRequest("rejected", provider="fake")
    fake = FakeAdapter({"a": Script(fail_at=1.0, error=bad), "b": Script()})
    opened: list[str] = []
    async with fallback(fake, opened=opened) as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 15)  # sends after the failure return (nothing to send them to)
        await reader.done()
    assert reader.error is bad
    assert opened == ["fake.a"]


async def test_no_candidate_left_raises_the_error() -> None:
    fake = FakeAdapter({"a": Script(fail_at=1.0),
                        "b": Script(fail_start=ProviderUnavailable("also down"))})
    async with fallback(fake) as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 15)
        await reader.done()
    assert isinstance(reader.error, ProviderUnavailable)
    assert "fake upstream gone" in str(reader.error)
    assert reader.switches() == []


async def test_switch_after_close_stream_closes_the_new_stream() -> None:
    fake = FakeAdapter({"a": Script(ends_on_close=False), "b": Script()})
    async with fallback(fake) as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 15)
        await stream.close_stream()
        fake.stream_of("a")._fail(ProviderTimeout("no end", provider="fake"))
        await reader.done()
    assert reader.error is None
    b = fake.stream_of("b")
    assert b.input_closed
    assert reader.heard() == set(range(15))


async def test_pending_finalize_is_asked_again_of_the_new_stream() -> None:
    fake = FakeAdapter({"a": Script(ack_finalize=False, final_every=100), "b": Script()})
    async with fallback(fake) as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 5)
        await stream.finalize()
        await feed(stream, 5, 3)
        fake.stream_of("a")._fail(ProviderUnavailable("gone", provider="fake"))
        for _ in range(100):
            if reader.switches():
                break
            await asyncio.sleep(0.01)
        await stream.close_stream()
        await reader.done()
    assert fake.stream_of("b").finalizes == 1
    assert sum(isinstance(e, Finalized) for e in reader.events) == 1
    assert reader.heard() == set(range(8))


async def test_unrequested_finalized_is_dropped() -> None:
    fake = FakeAdapter({"a": Script()})
    async with fallback(fake, "fake.a") as stream:
        await stream.start()
        reader = Consumer(stream)
        await stream.serving.stream._emit(Finalized())
        await stream.finalize()
        await stream.close_stream()
        await reader.done()
    assert sum(isinstance(e, Finalized) for e in reader.events) == 1


async def test_a_send_blocked_on_a_dead_stream_is_released() -> None:
    fake = FakeAdapter({"a": Script(block_send_at=0.5, fail_while_blocked=0.05),
                        "b": Script()})
    async with fallback(fake) as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 20)  # every send returns although `a` blocks forever
        await stream.close_stream()
        await reader.done()
    assert len(reader.switches()) == 1
    assert reader.heard() == set(range(20))


async def test_aclose_releases_a_blocked_send() -> None:
    fake = FakeAdapter({"a": Script(block_send_at=0.0)})
    stream = FallbackStream(["fake.a"], opener(fake), StreamOptions(sample_rate=RATE),
                            replay_seconds=300)
    await stream.start()
    sender = asyncio.create_task(stream.send_audio(blocks(1)))
    await asyncio.wait_for(fake.stream_of("a").blocked.wait(), WAIT)
    await asyncio.wait_for(stream.aclose(), WAIT)
    await asyncio.wait_for(sender, WAIT)
    assert fake.stream_of("a").shut_down


async def test_disabled_fallback_does_not_switch() -> None:
    fake = FakeAdapter({"a": Script(fail_at=1.0), "b": Script()})
    opened: list[str] = []
    async with fallback(fake, opened=opened) as stream:
        await stream.start()
        stream.disable_fallback()
        reader = Consumer(stream)
        await feed(stream, 0, 15)
        await reader.done()
    assert isinstance(reader.error, ProviderUnavailable)
    assert opened == ["fake.a"]


async def test_a_failing_fallback_candidate_is_skipped_mid_stream() -> None:
    fake = FakeAdapter({"a": Script(fail_at=1.0),
                        "b": Script(fail_start=ProviderUnavailable("b down")),
                        "c": Script()})
    async with fallback(fake, "fake.a", "fake.b", "fake.c") as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 20)
        await stream.close_stream()
        await reader.done()
    [switch] = reader.switches()
    assert switch.to_model == "fake.c"
    assert reader.heard() == set(range(20))
    assert fake.stream_of("b").shut_down


async def test_second_switch_gets_its_own_prefix() -> None:
    fake = FakeAdapter({"a": Script(fail_at=1.0), "b": Script(fail_at=1.0), "c": Script()})
    async with fallback(fake, "fake.a", "fake.b", "fake.c") as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 30)
        await stream.close_stream()
        await reader.done()
    assert [s.to_model for s in reader.switches()] == ["fake.b", "fake.c"]
    assert {f.segment_id.split("-")[0] for f in reader.finals()} >= {"seg0", "1", "2"}
    assert reader.heard() == set(range(30))
    ids = [f.segment_id for f in reader.finals()]
    assert len(ids) == len(set(ids))


async def test_speech_events_after_a_switch_are_in_session_time() -> None:
    from adapters.base import SpeechStarted, UtteranceEnd

    fake = FakeAdapter({"a": Script(fail_at=1.5), "b": Script()})
    async with fallback(fake) as stream:
        await stream.start()
        reader = Consumer(stream)
        await stream.serving.stream._emit(SpeechStarted(0.25))
        await feed(stream, 0, 20)
        b = stream.serving.stream
        assert stream.serving.model_id == "fake.b"
        await b._emit(SpeechStarted(0.25))
        await b._emit(UtteranceEnd(0.5))
        await stream.close_stream()
        await reader.done()
    speech = [e for e in reader.events if isinstance(e, SpeechStarted | UtteranceEnd)]
    assert speech == [SpeechStarted(0.25), SpeechStarted(1.25), UtteranceEnd(1.5)]


async def test_the_converters_tail_is_sent_before_the_end_of_stream() -> None:
    """A converter (resampler) holding samples back flushes them at close_stream."""
    fake = FakeAdapter({"a": Script()})
    held: list[bytes] = []

    def convert(pcm: bytes, last: bool) -> bytes:  # holds back the last 0.1 s
        held.append(pcm)
        data = b"".join(held)
        keep = 0 if last else min(len(data), 3200)
        held[:] = [data[len(data) - keep:]] if keep else []
        return data[:len(data) - keep]

    async def open_(model: str) -> Opened:
        stream = fake.open_stream("a", StreamOptions(sample_rate=RATE))
        await stream.start()
        return Opened(model, "fake", stream, convert)

    stream = FallbackStream(["fake.a"], open_, StreamOptions(sample_rate=RATE),
                            replay_seconds=300)
    await stream.start()
    reader = Consumer(stream)
    await feed(stream, 0, 5)
    assert len(fake.stream_of("a").received) == 4 * 3200
    await stream.close_stream()
    await reader.done()
    await stream.aclose()
    assert reader.heard() == set(range(5))


async def test_finalize_on_a_dead_stream_or_after_the_end_is_a_no_op() -> None:
    fake = FakeAdapter({"a": Script(fail_at=0.5)})
    async with fallback(fake, "fake.a") as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 8)  # fails at 0.5 s
        await stream.finalize()
        await reader.done()
    assert fake.stream_of("a").finalizes == 0
    assert isinstance(reader.error, ProviderUnavailable)


async def test_a_failed_stream_slow_to_close_does_not_delay_the_switch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import adapters.fallback

    monkeypatch.setattr(adapters.fallback, "CLOSE_WAIT", 0.2)
    fake = FakeAdapter({"a": Script(fail_at=1.0, shutdown_delay=30.0), "b": Script()})
    async with fallback(fake) as stream:
        await stream.start()
        reader = Consumer(stream)
        await feed(stream, 0, 20)
        await stream.close_stream()
        await reader.done()  # bounded by WAIT, far below a's 30 s close
        assert reader.heard() == set(range(20))
        closing = set(stream._closing)
        assert closing and not any(t.done() for t in closing)
    # aclose() waited for it (bounded by CLOSE_WAIT) and then cancelled it: nothing left
    assert all(t.done() for t in closing)


async def test_finalizes_awaiting_their_answer_are_bounded() -> None:
    """A client finalizing faster than its provider answers waits at the bound (its reader
    stops: backpressure) instead of piling requests up; an answer, or the end of the stream,
    lets it go on."""
    from adapters.fallback import MAX_FINALIZES_IN_FLIGHT

    fake = FakeAdapter({"a": Script(ack_finalize=False, final_every=100)})
    async with fallback(fake, "fake.a") as stream:
        await stream.start()
        reader = Consumer(stream)
        for i in range(MAX_FINALIZES_IN_FLIGHT):
            await feed(stream, i, 1)
            await asyncio.wait_for(stream.finalize(), WAIT)
        upstream = fake.stream_of("a")
        assert upstream.finalizes == MAX_FINALIZES_IN_FLIGHT
        waiting = asyncio.create_task(stream.finalize())
        await asyncio.sleep(0.2)
        assert not waiting.done() and upstream.finalizes == MAX_FINALIZES_IN_FLIGHT
        await upstream._emit(Finalized())  # the provider answers one
        await asyncio.wait_for(waiting, WAIT)
        assert upstream.finalizes == MAX_FINALIZES_IN_FLIGHT + 1
        blocked = asyncio.create_task(stream.finalize())
        await asyncio.sleep(0.2)
        assert not blocked.done()
        await stream.aclose()  # the end of the stream releases it too
        await asyncio.wait_for(blocked, WAIT)
        await reader.done()
    assert sum(isinstance(e, Finalized) for e in reader.events) == 1
