"""The Python client resumes a stream across a gateway restart or a dropped connection: it
reconnects, replays the audio since the last final it received, and the transcript continues
on one timeline — every final of an undisturbed run, none repeated, times monotonic."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.client import SpeechgateClient, SpeechgateError
from app.resume import ReconnectPolicy
from tests.e2e.rollout import GatewayProc
from tests.fakes.providers import Upstream, upstream
from tests.speech import BECKETT_TEXT, pcm

AUDIO = pcm("beckett.wav")
CHUNK = 3200  # 100 ms
KEY = "sg_resume_" + os.urandom(6).hex()
PATIENT = ReconnectPolicy(attempts=8, backoff=0.2, max_backoff=2.0)


def _env(up: Upstream) -> dict[str, str]:
    return {"SPEECHGATE_DEV_KEY": KEY, "DEEPGRAM_API_KEY": up.api_key,
            "SPEECHGATE_DEEPGRAM_BASE_URL": up.base_url, "SPEECHGATE_DRAIN_SECONDS": "5",
            "SPEECHGATE_DEFAULT_MODEL": f"deepgram.{up.model}",
            "SPEECHGATE_LOG_LEVEL": "warning"}


async def _run(url: str, *, when_sent: tuple[float, Callable[[], Any]] | None = None,
               policy: ReconnectPolicy = PATIENT, key: str = KEY) -> list[dict[str, Any]]:
    """Stream the recording in real time; at `when_sent[0]` seconds of audio, call
    `when_sent[1]` (in a thread: it blocks on processes)."""
    fired: list[asyncio.Task[Any]] = []

    def on_sent(seconds: float) -> None:
        if when_sent is not None and not fired and seconds >= when_sent[0]:
            fired.append(asyncio.ensure_future(asyncio.to_thread(when_sent[1])))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(AUDIO), CHUNK):
            yield AUDIO[i:i + CHUNK]

    client = SpeechgateClient(url, key, reconnect=policy)
    events = [e async for e in client.stream(chunks(), realtime=True, on_sent=on_sent,
                                             model="deepgram.nova-3",
                                             output_format="verbose_json")]
    for task in fired:
        await task
    return events


def _judge(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every final once, in order, on a monotonic timeline; returns the finals."""
    finals = [e for e in events if e.get("type") == "transcript" and e["is_final"]]
    ids = [f["segment_id"] for f in finals]
    assert len(ids) == len(set(ids)), ids
    end = 0.0
    for f in finals:
        assert f["start"] >= end - 1e-3 and f["end"] >= f["start"], (f, end)
        for w in f["words"]:
            assert f["start"] - 1e-3 <= w["start"] <= w["end"] <= f["end"] + 1e-3, (w, f)
        end = f["end"]
    assert " ".join(f["text"] for f in finals) == BECKETT_TEXT
    assert [e["type"] for e in events].count("session.created") == 1
    assert events[-1]["type"] == "session.ended"
    assert not [e for e in events if e.get("type") == "error"]
    return finals


async def test_a_rolling_restart_loses_and_repeats_nothing() -> None:
    async with upstream("deepgram", reference=AUDIO) as up:
        gateway = GatewayProc(_env(up))
        gateway.start()
        try:
            undisturbed = _judge(await _run(gateway.ws_url))
            assert up.open_sessions() == 0
            events = await _run(gateway.ws_url, when_sent=(4.0, gateway.restart))
        finally:
            gateway.stop()
        assert gateway.starts == 2
    finals = _judge(events)
    reconnected = [e for e in events if e["type"] == "reconnected"]
    assert len(reconnected) == 1, reconnected
    again = reconnected[0]
    assert again["code"] == 1012 and "restarting" in again["reason"]
    assert again["lost_seconds"] == 0
    # The first session's finals came before the restart; the rest after, on the same clock.
    index = events.index(again)
    before = [f for f in finals if events.index(f) < index]
    assert before and len(before) < len(finals)
    assert again["resumed_at"] == pytest.approx(before[-1]["end"], abs=0.002)
    assert [f["text"] for f in undisturbed] and len(finals) >= len(undisturbed)


async def test_a_dropped_connection_is_resumed_from_the_last_final() -> None:
    async with upstream("deepgram", reference=AUDIO) as up:
        gateway = GatewayProc(_env(up))
        gateway.start()

        def crash_and_replace() -> None:
            gateway.kill()  # no drain, no close frame: the client sees 1006
            gateway.start()

        try:
            events = await _run(gateway.ws_url, when_sent=(5.0, crash_and_replace))
        finally:
            gateway.stop()
    _judge(events)
    again = [e for e in events if e["type"] == "reconnected"]
    assert len(again) == 1 and again[0]["code"] == 1006
    # What was not finalized before the crash was replayed, not lost.
    assert again[0]["replayed_seconds"] > 0 and again[0]["lost_seconds"] == 0


async def test_attempts_are_bounded_and_final_codes_are_not_retried() -> None:
    async with upstream("deepgram", reference=AUDIO) as up:
        gateway = GatewayProc(_env(up))
        gateway.start()
        try:
            with pytest.raises(SpeechgateError) as refused:
                await _run(gateway.ws_url, key="sg_nobody")
            assert refused.value.code == 4401
            # A gateway that never comes back: a few attempts with backoff, then the error.
            quick = ReconnectPolicy(attempts=2, backoff=0.05, max_backoff=0.1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(OSError):
                await _run(gateway.ws_url, when_sent=(2.0, gateway.kill), policy=quick)
            assert loop.time() - started < 30
        finally:
            gateway.stop()


async def test_speechgate_transcribe_prints_every_final_once_across_a_restart(
        tmp_path: Path) -> None:
    from app.audio import wav_bytes

    wav = tmp_path / "beckett16k.wav"
    wav.write_bytes(wav_bytes(AUDIO, 16000))
    async with upstream("deepgram", reference=AUDIO) as up:
        gateway = GatewayProc(_env(up))
        gateway.start()
        try:
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-c",
                "import sys; from app.cli import main; raise SystemExit(main(sys.argv[1:]))",
                "transcribe", str(wav), "--url", gateway.ws_url, "--key", KEY, "--model",
                "deepgram.nova-3", "--realtime", "--quiet", "--reconnect-attempts", "8",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            await asyncio.sleep(4.0)
            await asyncio.to_thread(gateway.restart)
            async with asyncio.timeout(60):
                out, err = await cli.communicate()
        finally:
            gateway.stop()
    assert cli.returncode == 0, err.decode()
    assert gateway.starts == 2
    lines = out.decode().splitlines()
    assert len(lines) >= 2 and " ".join(lines) == BECKETT_TEXT, lines
    assert "gateway closed 1012" in err.decode() and "resumed at" in err.decode(), err.decode()
