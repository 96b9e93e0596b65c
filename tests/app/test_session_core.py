"""The session core driven by scripted adapters (no server): relay rules, limits, life cycle.

Every test checks what the front-end receives and what the gateway still holds afterwards
(`gateway.sessions`, the key's leases, the active-sessions gauge, tasks).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.base import (
    Finalized,
    ProviderBadRequest,
    ProviderUnavailable,
    Transcript,
)
from app.errors import GatewayError
from app.gateway import Gateway, build_gateway
from app.params import parse_session_params
from app.session import (
    ProviderSwitched,
    Session,
    SessionCreated,
    SessionEnded,
    SessionError,
    SessionEvent,
    SessionWarning,
    State,
    core,
    limits,
    open_session,
)
from app.session.events import OUT_QUEUE_SIZE
from auth.base import Principal
from config import load_settings
from tests.fakeadapter import FakeAdapter, Script, block_names, blocks

WAIT = 10.0


@dataclass
class Env:
    gateway: Gateway
    fake: FakeAdapter
    principal: Principal

    def request(self, **params: str) -> Any:
        query = {"model": "fake.a", "output_format": "verbose_json", **params}
        return parse_session_params({k: [v] for k, v in query.items()},
                                    default_model="fake.a")

    def leases(self) -> int:
        return sum(len(v) for v in self.gateway.access._active.values())

    def assert_nothing_held(self) -> None:
        assert self.gateway.sessions == set()
        assert self.leases() == 0
        assert self.gateway.metrics.active_total() == 0


@asynccontextmanager
async def env(scripts: dict[str, Script] | None = None, *, key: dict[str, Any] | None = None,
              **settings: Any) -> AsyncIterator[Env]:
    gateway = build_gateway(load_settings(**settings))
    fake = FakeAdapter(scripts)
    gateway.registry.register(fake)
    await gateway.access.start()
    try:
        _, secret = await gateway.access.store.create("test", **(key or {}))
        yield Env(gateway, fake, await gateway.access.authenticate(secret))
    finally:
        await gateway.access.aclose()


async def collect(session: Session) -> list[SessionEvent]:
    return [event async for event in session.events()]


async def run(e: Env, pcm: bytes, *, chunk: int = 3200, end: bool = True,
              **params: str) -> list[SessionEvent]:
    """A whole session as a front-end runs it; returns every event it delivered."""
    async with open_session(e.gateway, e.request(**params), e.principal) as session:
        reader = asyncio.create_task(collect(session))
        for i in range(0, len(pcm), chunk):
            await asyncio.wait_for(session.send_audio(pcm[i:i + chunk]), WAIT)
        if end:
            await session.close_stream()
        events = await asyncio.wait_for(reader, WAIT)
    return events


def finals(events: list[SessionEvent]) -> list[Transcript]:
    return [e for e in events if isinstance(e, Transcript) and e.is_final]


def heard(events: list[SessionEvent]) -> set[int]:
    return set().union(*(block_names(f.text) for f in finals(events)))


# ---- the happy path and the relay rules ---------------------------------------------------


async def test_session_created_first_finals_then_ended_and_nothing_held() -> None:
    async with env() as e:
        events = await run(e, blocks(25))
        assert isinstance(events[0], SessionCreated) and events[0].model == "fake.a"
        assert isinstance(events[-1], SessionEnded)
        assert events[-1].audio_seconds == 2.5
        assert events[-1].provider_seconds == {"fake.a": 2.5}
        assert heard(events) == set(range(25))
        e.assert_nothing_held()
        assert e.fake.stream_of("a").shut_down


async def test_a_repeated_final_is_delivered_once() -> None:
    async with env({"a": Script(repeat_finals=True)}) as e:
        events = await run(e, blocks(25))
    ids = [f.segment_id for f in finals(events)]
    assert ids == ["seg0", "seg1", "seg2"]


async def test_a_partial_after_its_final_is_dropped() -> None:
    async with env() as e, open_session(e.gateway, e.request(), e.principal) as session:
        reader = asyncio.create_task(collect(session))
        stream = e.fake.stream_of("a")
        await stream._emit(Transcript("x", True, "done", 0.0, 0.5))
        await stream._emit(Transcript("x", False, "late partial", 0.0, 0.5))
        await session.close_stream()
        events = await asyncio.wait_for(reader, WAIT)
    assert [(t.segment_id, t.is_final) for t in events if isinstance(t, Transcript)] \
        == [("x", True)]


async def test_empty_finals_only_clear_shown_partials() -> None:
    async with env({"a": Script(empty_finals=True)}) as e:
        shown = await run(e, blocks(15))
        hidden = await run(e, blocks(15), output_format="json")
    assert [f.segment_id for f in finals(shown)] == ["seg0", "seg1"]
    assert all(f.text == "" for f in finals(shown))
    assert finals(hidden) == [], "nothing said, nothing shown: no final"


async def test_partials_only_with_interim_results() -> None:
    async with env() as e:
        verbose = await run(e, blocks(5))
        plain = await run(e, blocks(5), output_format="json")
    assert any(isinstance(t, Transcript) and not t.is_final for t in verbose)
    assert not any(isinstance(t, Transcript) and not t.is_final for t in plain)


async def test_finalize_acknowledged_after_its_finals() -> None:
    async with env({"a": Script(final_every=100)}) as e, \
            open_session(e.gateway, e.request(), e.principal) as session:
        reader = asyncio.create_task(collect(session))
        await session.send_audio(blocks(5))
        await session.finalize()
        await session.close_stream()
        events = await asyncio.wait_for(reader, WAIT)
    index = next(i for i, ev in enumerate(events) if isinstance(ev, Finalized))
    assert block_names(finals(events[:index])[0].text) == set(range(5))
    assert sum(isinstance(ev, Finalized) for ev in events) == 1


async def test_provider_warning_becomes_a_session_warning_usage_is_not_relayed() -> None:
    from adapters.base import ProviderUsage, ProviderWarning

    async with env() as e, open_session(e.gateway, e.request(), e.principal) as session:
        reader = asyncio.create_task(collect(session))
        await e.fake.stream_of("a")._emit(ProviderWarning("slow", "upstream is slow"))
        await e.fake.stream_of("a")._emit(ProviderUsage(12.0))
        await session.close_stream()
        events = await asyncio.wait_for(reader, WAIT)
    assert SessionWarning("slow", "upstream is slow") in events
    assert not any(isinstance(ev, ProviderUsage) for ev in events)
    assert [type(ev) for ev in events] == [SessionCreated, SessionWarning, SessionEnded]


async def test_events_have_one_reader() -> None:
    async with env() as e, open_session(e.gateway, e.request(), e.principal) as session:
        first = session.events()
        assert isinstance(await anext(first), SessionCreated)
        with pytest.raises(RuntimeError, match="one reader"):
            await anext(session.events())
        await session.close_stream()
        rest = [event async for event in first]
    assert isinstance(rest[-1], SessionEnded)


async def test_audio_after_close_stream_is_refused() -> None:
    async with env() as e, open_session(e.gateway, e.request(), e.principal) as session:
        await session.close_stream()
        with pytest.raises(GatewayError) as info:
            await session.send_audio(blocks(1))
        assert info.value.close_code == 4400
        await asyncio.wait_for(collect(session), WAIT)


# ---- fallback through the session ---------------------------------------------------------


async def test_fallback_before_the_stream_says_why_in_session_created() -> None:
    down = ProviderUnavailable("cannot reach fake", provider="fake")
    async with env({"a": Script(fail_start=down), "b": Script()}) as e:
        events = await run(e, blocks(10), fallback="fake.b")
        created = events[0]
        assert isinstance(created, SessionCreated) and created.model == "fake.b"
        assert any("fake.a unavailable" in w and "cannot reach fake" in w
                   for w in created.warnings)
        assert heard(events) == set(range(10))
        e.assert_nothing_held()


async def test_fallback_during_the_stream_replays_and_meters_both() -> None:
    async with env({"a": Script(fail_at=1.5), "b": Script()}) as e:
        events = await run(e, blocks(30), fallback="fake.b")
        e.assert_nothing_held()
    [switch] = [ev for ev in events if isinstance(ev, ProviderSwitched)]
    assert switch.to_model == "fake.b" and switch.lost_seconds == 0.0
    assert heard(events) == set(range(30))
    ended = events[-1]
    assert isinstance(ended, SessionEnded)
    assert set(ended.provider_seconds) == {"fake.a", "fake.b"}
    assert ended.audio_seconds == 3.0


async def test_non_retryable_error_ends_the_session_without_fallback() -> None:
    bad = ProviderBadRequest("rejected parameter", provider="fake")
    async with env({"a": Script(fail_at=0.5, error=bad), "b": Script()}) as e:
        events = await run(e, blocks(10), fallback="fake.b")
        e.assert_nothing_held()
    assert isinstance(events[-1], SessionError) and events[-1].error.close_code == 4400
    assert [s.model for s in e.fake.streams] == ["a"]


async def test_fallback_model_outside_allowed_models_is_refused_before_anything_opens() -> None:
    async with env(key={"allowed_models": ["fake.a"]}) as e:
        with pytest.raises(GatewayError) as info:
            async with open_session(e.gateway, e.request(fallback="fake.b"), e.principal):
                pass
        assert info.value.close_code == 4403 and "fake.b" in info.value.reason
        assert e.fake.streams == []
        e.assert_nothing_held()
        # The same key without the fallback is served.
        events = await run(e, blocks(5))
        assert isinstance(events[-1], SessionEnded)


async def test_unknown_fallback_model_is_refused_up_front() -> None:
    async with env() as e:
        with pytest.raises(GatewayError) as info:
            async with open_session(e.gateway, e.request(fallback="fake.nope"), e.principal):
                pass
        assert info.value.close_code == 4404 and "fake.nope" in info.value.reason
        assert e.fake.streams == []
        e.assert_nothing_held()


async def test_no_model_can_be_opened_refuses_the_session() -> None:
    down = ProviderUnavailable("cannot reach fake", provider="fake")
    async with env({"a": Script(fail_start=down), "b": Script(fail_start=down)}) as e:
        with pytest.raises(GatewayError) as info:
            async with open_session(e.gateway, e.request(fallback="fake.b"), e.principal):
                pass
        assert info.value.close_code == 4503 and "cannot reach fake" in info.value.reason
        e.assert_nothing_held()


async def test_a_language_the_model_does_not_speak_is_a_4400() -> None:
    from adapters.base import Capabilities

    async with env() as e:
        e.fake.caps = Capabilities(languages=("en", "de"))
        with pytest.raises(GatewayError) as info:
            async with open_session(e.gateway, e.request(language="fr"), e.principal):
                pass
        assert info.value.close_code == 4400
        assert "fake.a supports en, de, not 'fr'" in info.value.reason
        e.assert_nothing_held()


# ---- failures, limits and the end ---------------------------------------------------------


async def test_send_blocked_on_a_dead_upstream_is_released_and_the_session_ends() -> None:
    """A segmented uploader whose worker died: send_audio blocks forever, then the stream
    fails. The pending send returns, the client gets the error, nothing is held."""
    down = ProviderUnavailable("upload worker died", provider="fake")
    async with env({"a": Script(block_send_at=0.5, fail_while_blocked=0.05, error=down)}) as e:
        async with open_session(e.gateway, e.request(), e.principal) as session:
            reader = asyncio.create_task(collect(session))
            for i in range(10):
                await asyncio.wait_for(session.send_audio(blocks(1, i)), WAIT)
            events = await asyncio.wait_for(reader, WAIT)
            assert isinstance(events[-1], SessionError)
            assert events[-1].error.close_code == 4503
            e.assert_nothing_held()  # already, before the front-end closes
        assert e.fake.stream_of("a").shut_down


async def test_upstream_ending_early_is_an_error() -> None:
    async with env({"a": Script(end_at=0.5)}) as e:
        events = await run(e, blocks(10), end=False)
        e.assert_nothing_held()
    assert isinstance(events[-1], SessionError) and events[-1].error.close_code == 4502
    assert "ended the stream unexpectedly" in events[-1].error.message


async def test_idle_timeout_delivers_pending_finals_then_4408() -> None:
    async with env({"a": Script(final_every=100)}, idle_timeout=0.2) as e:
        events = await run(e, blocks(5), end=False)
        e.assert_nothing_held()
    assert heard(events) == set(range(5)), "the finals come before the error"
    assert isinstance(events[-1], SessionError) and events[-1].error.close_code == 4408


async def test_length_limit_4413() -> None:
    async with env(max_session_seconds=0.3) as e, \
            open_session(e.gateway, e.request(), e.principal) as session:
        for i in range(3):
            await session.send_audio(blocks(1, i))
        events = await asyncio.wait_for(collect(session), WAIT)
        assert isinstance(events[-1], SessionError) and events[-1].error.close_code == 4413
        assert session.input_closed


async def test_usage_is_metered_warned_then_the_quota_ends_the_session(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "USAGE_INTERVAL", 0.05)
    async with env({"a": Script(final_every=100)}, key={"audio_seconds_per_day": 3},
                   idle_timeout=30) as e, \
            open_session(e.gateway, e.request(), e.principal) as session:
        events: list[SessionEvent] = []
        warned = asyncio.Event()

        async def read() -> None:
            async for event in session.events():
                events.append(event)
                if isinstance(event, SessionWarning):
                    warned.set()

        reader = asyncio.create_task(read())
        await session.send_audio(blocks(28))  # 2.8 s: over the warning threshold (90 %)
        await asyncio.wait_for(warned.wait(), WAIT)
        await session.send_audio(blocks(7, 28))  # 3.5 s: over the quota
        await asyncio.wait_for(reader, WAIT)
        usage = await e.gateway.access.store.usage(e.principal.key_id)
    warnings = [ev for ev in events if isinstance(ev, SessionWarning)]
    assert warnings and warnings[0].code == "quota_warning"
    assert heard(events) == set(range(35)), "the finals of the audio received come first"
    assert isinstance(events[-1], SessionError) and events[-1].error.close_code == 4402
    assert usage["total"]["audio_seconds"] == 3.5, "every second received is metered"


async def test_a_stalled_upstream_cannot_hold_a_forced_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "FINALIZE_WAIT", 0.2)
    async with env({"a": Script(stall=True)}, idle_timeout=0.2) as e:
        events = await run(e, blocks(3), end=False)
        e.assert_nothing_held()
    assert isinstance(events[-1], SessionError) and events[-1].error.close_code == 4408


async def test_drain_delivers_finals_then_1012() -> None:
    async with env({"a": Script(final_every=100)}) as e:
        async with open_session(e.gateway, e.request(), e.principal) as session:
            reader = asyncio.create_task(collect(session))
            await session.send_audio(blocks(5))
            drain = asyncio.create_task(e.gateway.drain(WAIT))
            events = await asyncio.wait_for(reader, WAIT)
            assert e.gateway.draining and not drain.done()  # waits for the front-end
        await asyncio.wait_for(drain, WAIT)
        e.assert_nothing_held()
        with pytest.raises(GatewayError) as info:
            async with open_session(e.gateway, e.request(), e.principal):
                pass
        assert info.value.close_code == 1012
    assert heard(events) == set(range(5))
    assert isinstance(events[-1], SessionError) and events[-1].error.close_code == 1012


async def test_a_second_forced_end_does_not_cut_the_first_ones_finals() -> None:
    async with env({"a": Script(final_every=100)}) as e, \
            open_session(e.gateway, e.request(), e.principal) as session:
        reader = asyncio.create_task(collect(session))
        await session.send_audio(blocks(5))
        await asyncio.gather(
            session._finalize_then_fail(GatewayError(1012, "server restarting; reconnect")),
            session._finalize_then_fail(GatewayError(4413, "too long")))
        events = await asyncio.wait_for(reader, WAIT)
    assert heard(events) == set(range(5))
    assert isinstance(events[-1], SessionError) and events[-1].error.close_code == 1012


async def test_client_leaving_closes_the_upstream_and_releases() -> None:
    async with env() as e:
        async with open_session(e.gateway, e.request(), e.principal) as session:
            await session.send_audio(blocks(3))
        assert session.state is State.CLOSED
        assert e.fake.stream_of("a").shut_down
        e.assert_nothing_held()


async def test_lease_is_released_before_the_last_event_is_delivered() -> None:
    """A client that reconnects as soon as it sees the close is admitted."""
    async with env(key={"max_concurrent_streams": 1}) as e:
        for _ in range(5):
            async with open_session(e.gateway, e.request(), e.principal) as session:
                await session.send_audio(blocks(2))
                await session.close_stream()
                async for event in session.events():
                    if isinstance(event, SessionEnded):
                        # The front-end would send its close frame now: already released.
                        assert e.leases() == 0 and session not in e.gateway.sessions
                        async with open_session(e.gateway, e.request(), e.principal) as again:
                            assert again.state is State.OPEN


async def test_a_client_that_stops_reading_is_backpressured() -> None:
    async with env({"a": Script(final_every=0.1)}) as e, \
            open_session(e.gateway, e.request(), e.principal) as session:

        async def feed() -> None:
            for i in range(2000):
                await session.send_audio(blocks(1, i % 100))

        feeder = asyncio.create_task(feed())
        done, _ = await asyncio.wait({feeder}, timeout=1.0)
        assert not done, "the sender is slowed down when nobody reads"
        assert len(session._out._items) <= OUT_QUEUE_SIZE
        assert e.fake.stream_of("a")._events.qsize() <= 256
        reader = asyncio.create_task(collect(session))
        await asyncio.wait_for(feeder, WAIT)  # reading again lets it through
        await session.close_stream()
        events = await asyncio.wait_for(reader, WAIT)
    assert len(finals(events)) == 2000


async def test_cancelling_a_connection_mid_close_propagates_and_leaks_nothing() -> None:
    async with env({"a": Script(shutdown_delay=5.0)}) as e:
        before = asyncio.all_tasks()

        async def connection() -> None:
            async with open_session(e.gateway, e.request(), e.principal) as session:
                await session.send_audio(blocks(3))
            # leaving the block closes the session; the upstream takes 5 s to close

        task = asyncio.create_task(connection())
        for _ in range(200):
            if e.fake.streams and e.fake.stream_of("a").shut_down:
                break
            await asyncio.sleep(0.01)
        assert e.fake.stream_of("a").shut_down, "the close is under way"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
        assert task.cancelled()
        e.assert_nothing_held()
        assert e.fake.stream_of("a").reader.done(), "the upstream's reader was stopped"
        leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
        assert not [t for t in leaked if not t.done()]
