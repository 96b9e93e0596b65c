"""A rolling deploy on a stand-in for the cluster: three gateway processes behind a real nginx,
sharing one real Redis. 30 streams of real speech (28 through the Deepgram fake, 2 on the local
engine) run through nginx with the Python client while the gateways are restarted one by one
(SIGTERM -> drain -> 1012 -> a new process on the same port). Every stream ends with the text
of an undisturbed run, no final repeated, times monotonic; each key's concurrency limit holds
across the three processes throughout (sampled in Redis, and probed between restarts)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import redis.asyncio as aioredis
from playwright.async_api import Browser

from app.client import SpeechgateClient
from app.resume import ReconnectPolicy
from auth.keys import key_leases
from tests.auth.e2e_client import ADMIN_TOKEN, create_key, refusal
from tests.e2e.rollout import GatewayProc, nginx
from tests.e2e.test_demo_page import browser, next_event, open_page, speech_wav  # noqa: F401
from tests.fakes.providers import upstream
from tests.servers import RedisServer
from tests.speech import TWO_CITIES_TEXT, pcm, wer

DB = 11
AUDIO = pcm("two_cities.wav")
SECONDS = len(AUDIO) / 32000
CHUNK = 3200
LIMIT = 10
POLICY = ReconnectPolicy(attempts=8, backoff=0.2, max_backoff=2.0)
DEEPGRAM, LOCAL = "deepgram.nova-3", "local.tiny.en"
# (key index, model) for each of the 30 streams: three keys, each at its limit.
PLAN = [(k, DEEPGRAM) for k in range(3) for _ in range(LIMIT)]
PLAN[-2:] = [(2, LOCAL), (2, LOCAL)]


async def chunks() -> AsyncIterator[bytes]:
    for i in range(0, len(AUDIO), CHUNK):
        yield AUDIO[i:i + CHUNK]


async def transcribe(url: str, key: str, model: str, realtime: bool) -> list[dict[str, Any]]:
    client = SpeechgateClient(url, key, reconnect=POLICY)
    return [e async for e in client.stream(chunks(), realtime=realtime, model=model,
                                           output_format="verbose_json")]


def finals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [e for e in events if e.get("type") == "transcript" and e["is_final"]]
    ids = [f["segment_id"] for f in out]
    assert len(ids) == len(set(ids)), f"a final repeated: {ids}"
    end = 0.0
    for f in out:
        assert f["start"] >= end - 1e-3 and f["end"] >= f["start"], (f, end)
        end = f["end"]
    assert events[-1]["type"] == "session.ended", events[-3:]
    return out


def text(events: list[dict[str, Any]]) -> str:
    return " ".join(" ".join(str(f["text"]) for f in finals(events)).split())


async def live_leases(client: aioredis.Redis, key_ids: list[str]) -> list[int]:
    seconds, micros = await client.time()
    now_ms = seconds * 1000 + micros // 1000
    return [int(await client.zcount(key_leases(k), now_ms, "+inf")) for k in key_ids]


@contextlib.contextmanager
def gateways(env: dict[str, str], n: int) -> Iterator[list[GatewayProc]]:
    procs = [GatewayProc(env) for _ in range(n)]
    try:
        for proc in procs:
            proc.start(wait=False)
        for proc in procs:
            proc.start_wait()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


async def test_a_rolling_restart_behind_nginx_loses_no_word(redis: RedisServer) -> None:
    redis_url = f"redis://127.0.0.1:{redis.port}/{DB}"
    store = aioredis.Redis.from_url(redis_url)
    await store.flushdb()
    async with upstream("deepgram", reference=AUDIO, text=TWO_CITIES_TEXT,
                        speech_seconds=SECONDS, idle_timeout=30) as up:
        env = {"SPEECHGATE_REDIS_URL": redis_url, "SPEECHGATE_ADMIN_TOKEN": ADMIN_TOKEN,
               "DEEPGRAM_API_KEY": up.api_key, "SPEECHGATE_DEEPGRAM_BASE_URL": up.base_url,
               "SPEECHGATE_DRAIN_SECONDS": "10", "SPEECHGATE_LOG_LEVEL": "warning",
               "SPEECHGATE_LEASE_TTL_SECONDS": "10"}
        with gateways(env, 3) as procs, nginx([p.port for p in procs]) as lb:
            keys = [await create_key(lb.http_url, max_concurrent_streams=LIMIT)
                    for _ in range(3)]
            key_ids = [k[0] for k in keys]
            # Undisturbed runs: the text each stream must end with.
            expected = {DEEPGRAM: text(await transcribe(lb.ws_url, keys[0][1], DEEPGRAM, False)),
                        LOCAL: text(await transcribe(lb.ws_url, keys[2][1], LOCAL, False))}
            assert expected[DEEPGRAM] == " ".join(TWO_CITIES_TEXT.split())
            assert len(expected[LOCAL].split()) > 80, expected[LOCAL]

            samples: list[list[int]] = []
            sampling = True

            async def sample() -> None:
                while sampling:
                    samples.append(await live_leases(store, key_ids))
                    await asyncio.sleep(0.05)

            async def settled(streams: list[asyncio.Task[Any]], within: float = 30) -> None:
                """Every unfinished stream holds its lease again (none is reconnecting)."""
                deadline = time.monotonic() + within
                while True:
                    running = sum(not s.done() for s in streams)
                    if sum(await live_leases(store, key_ids)) == running:
                        return
                    assert time.monotonic() < deadline, "streams did not reconnect"
                    await asyncio.sleep(0.1)

            async def probe() -> None:
                """With every key at its limit, one more stream is refused, on any gateway."""
                for _, secret in keys:
                    for proc in procs:
                        busy = await refusal(proc.ws_url, secret)
                        assert (busy.close_code, busy.error["code"]) == (4429, "too_many_streams")

            sampler = asyncio.create_task(sample())
            streams = []
            for key, model in PLAN:
                streams.append(asyncio.create_task(
                    transcribe(lb.ws_url, keys[key][1], model, True)))
                await asyncio.sleep(0.05)
            await settled(streams)
            await asyncio.sleep(2.0)
            for proc in procs:
                await probe()
                await asyncio.to_thread(proc.restart)  # SIGTERM, drain, 1012, start again
                await settled(streams)
                await probe()
            results = await asyncio.gather(*streams, return_exceptions=True)
            sampling = False
            await sampler
            failures = [r for r in results if isinstance(r, BaseException)]
            assert not failures, (failures, [p.stderr() for p in procs], lb.log())
            assert all(p.starts == 2 for p in procs)
            # Nothing left behind: no lease, no upstream session.
            assert await live_leases(store, key_ids) == [0, 0, 0]
            async with asyncio.timeout(10):
                await up.sessions_closed()
    await store.aclose()

    resumed = 0
    for (_, model), events in zip(PLAN, results, strict=True):
        assert isinstance(events, list)
        again = [e for e in events if e["type"] == "reconnected"]
        assert all(e["code"] == 1012 and e["lost_seconds"] == 0 for e in again), again
        assert not [e for e in events if e["type"] == "error"]
        resumed += bool(again)
        if model == DEEPGRAM:
            assert text(events) == expected[model]
        else:
            # The real model: a drain finalizes the audio received so far, and a cut inside a
            # word changes the words at that cut ("best of time." then "times it was..."),
            # and Whisper's context shifts a word or two elsewhere. Bounded here, not exact:
            # drain finals that stop at the last pause would make it exact (README
            # "Reconnecting", a session-core change).
            assert wer(expected[model], text(events)) <= 0.2, (
                again, [(f["start"], f["end"], f["text"]) for f in finals(events)])
    # Every gateway held streams when it restarted: most streams were resumed at least once.
    assert resumed >= len(PLAN) // 2, resumed
    assert max(max(s) for s in samples) <= LIMIT
    assert len(samples) > 100


async def test_the_demo_page_resumes_live_microphone_after_a_restart(
        browser: Browser, redis: RedisServer) -> None:  # noqa: F811 - imported fixture
    """Headless Chromium speaking into the demo page (local engine); the gateway restarts
    (SIGTERM, drain, 1012, a new process on the same port): the page reconnects, replays the
    microphone audio since its last final, and the transcript goes on — later times, new
    segment ids, no error shown, and a clean end."""
    key = "sg_demo_" + os.urandom(6).hex()
    gateway = GatewayProc({"SPEECHGATE_DEV_KEY": key, "SPEECHGATE_DRAIN_SECONDS": "10",
                           "SPEECHGATE_REDIS_URL": f"redis://127.0.0.1:{redis.port}/{DB + 1}",
                           "SPEECHGATE_LOG_LEVEL": "warning"})
    gateway.start()
    try:
        page, events = await open_page(browser, gateway)  # type: ignore[arg-type]
        await page.fill("#key", key)
        await page.select_option("#model", "local.tiny.en")
        await page.click("#start")
        finals: list[dict[str, Any]] = []
        async with asyncio.timeout(90):
            while not finals:
                event = await next_event(events)
                assert event["name"] != "closed", event
                if event["name"] == "final":
                    finals.append(event["detail"])
            await asyncio.to_thread(gateway.restart)
            # Segment ids of a resumed session are prefixed r<connection attempt>.
            while not any(str(f["segment_id"]).startswith("r") for f in finals):
                event = await next_event(events)
                assert event["name"] != "closed", event
                if event["name"] == "final":
                    finals.append(event["detail"])
        await page.wait_for_selector("#notices .notice:text('reconnected')")
        await page.click("#stop")
        while (event := await next_event(events, 60))["name"] != "closed":
            if event["name"] == "final":
                finals.append(event["detail"])
        assert event["detail"]["code"] == 1000
        assert await page.locator("#errors .error").count() == 0
        ids = [f["segment_id"] for f in finals]
        assert len(ids) == len(set(ids)), ids
        for before, after in itertools.pairwise(finals):
            assert after["start"] >= before["end"] - 1e-3, (before, after)
        assert gateway.starts == 2
        await page.context.close()
    finally:
        gateway.stop()


async def test_readiness_fails_as_soon_as_a_gateway_drains() -> None:
    """Kubernetes must stop routing to a pod the moment it drains: once the SIGTERM is handled,
    /readyz is never 200 again (503 draining on a kept-alive connection, refused on a new one)
    while a session that cannot finish (its provider never answers the flush) holds the drain
    open."""
    import httpx
    import websockets

    key = "sg_ready_" + os.urandom(6).hex()
    async with upstream("deepgram", fault="stall") as up:
        gateway = GatewayProc({"SPEECHGATE_DEV_KEY": key, "DEEPGRAM_API_KEY": up.api_key,
                               "SPEECHGATE_DEEPGRAM_BASE_URL": up.base_url,
                               "SPEECHGATE_DRAIN_SECONDS": "4",
                               "SPEECHGATE_DEFAULT_MODEL": DEEPGRAM,
                               "SPEECHGATE_LOG_LEVEL": "warning"})
        gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.http_url, timeout=2) as http:
                assert (await http.get("/readyz")).status_code == 200
                ws = await websockets.connect(
                    f"{gateway.ws_url}/v1/transcribe?model={DEEPGRAM}&api_key={key}")
                await ws.send(AUDIO[:32000])
                assert gateway.process is not None
                gateway.process.send_signal(signal.SIGTERM)
                answers: list[int | str] = []
                loop = asyncio.get_running_loop()
                until = loop.time() + 2.5  # well inside the 4 s drain
                while loop.time() < until:
                    try:
                        answers.append((await http.get("/readyz")).status_code)
                    except httpx.TransportError as exc:
                        answers.append(type(exc).__name__)
                    await asyncio.sleep(0.1)
                assert gateway.process.poll() is None, "the drain ended early"
                # The signal takes a moment to arrive; from then on, never ready again.
                first = next(i for i, a in enumerate(answers) if a != 200)
                assert first <= 5 and 200 not in answers[first:], answers
                await ws.close()
            assert gateway.terminate(30) == -signal.SIGTERM
        finally:
            gateway.stop()
