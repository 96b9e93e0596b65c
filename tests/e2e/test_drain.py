"""Graceful shutdown: a gateway process told to stop (SIGTERM) first delivers the finals of the
audio each open session has sent, then closes it 1012 (restarting, reconnect) — the words a
client already saw as partials are not lost to a deploy."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fakes.providers import upstream
from tests.servers import gateway_process
from tests.speech import BECKETT_TEXT, pcm

AUDIO = pcm("beckett.wav")
KEY = "sg_drain_" + os.urandom(6).hex()


async def test_sigterm_delivers_the_finals_then_closes_1012() -> None:
    async with upstream("deepgram") as up:
        env = {"SPEECHGATE_DEV_KEY": KEY, "DEEPGRAM_API_KEY": up.api_key,
               "SPEECHGATE_DEEPGRAM_BASE_URL": up.base_url, "SPEECHGATE_DRAIN_SECONDS": "5",
               "SPEECHGATE_LOG_LEVEL": "warning"}
        with gateway_process(env=env) as (proc, port):
            url = (f"ws://127.0.0.1:{port}/v1/transcribe?model=deepgram.{up.model}"
                   "&output_format=verbose_json")
            async with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
                # Half of the recording, then wait until the gateway shows a partial of it.
                half = AUDIO[: len(AUDIO) // 2 // 3200 * 3200]
                for i in range(0, len(half), 3200):
                    await ws.send(half[i:i + 3200])
                messages: list[dict[str, object]] = []
                async with asyncio.timeout(20):
                    while not any(m.get("type") == "transcript" for m in messages):
                        messages.append(json.loads(await ws.recv()))
                proc.send_signal(signal.SIGTERM)
                started = time.monotonic()
                try:
                    async with asyncio.timeout(20):
                        async for raw in ws:
                            messages.append(json.loads(raw))
                except ConnectionClosed:
                    pass
                code, reason = ws.close_code, ws.close_reason
            # uvicorn re-raises the signal once it has shut down cleanly.
            assert proc.wait(20) == -signal.SIGTERM

    assert code == 1012, (code, reason, messages[-3:])
    assert "restarting" in (reason or "")
    finals = [m for m in messages if m.get("type") == "transcript" and m["is_final"]]
    partials = [m for m in messages if m.get("type") == "transcript" and not m["is_final"]]
    final_text = " ".join(str(f["text"]) for f in finals)
    # Everything said in the audio sent is delivered as finals: a non-empty prefix of the text,
    # covering at least what the last partial showed.
    assert final_text and BECKETT_TEXT.startswith(final_text), final_text
    assert len(final_text.split()) >= len(str(partials[-1]["text"]).split())
    error = next(m for m in messages if m.get("type") == "error")
    assert error["code"] == "server_restarting"
    assert messages.index(error) > messages.index(finals[-1])
    assert time.monotonic() - started < 10
