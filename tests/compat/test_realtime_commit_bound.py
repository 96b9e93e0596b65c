"""``/v1/realtime``: commits waiting for their transcription are bounded (32). A client that
commits faster than its provider answers gets ``too_many_pending_commits`` error events for the
commits over the bound — nothing is queued without limit, nothing it sent is dropped silently —
and once the provider has caught up, commits are taken again."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import websockets

from app.frontends.openai_realtime import MAX_PENDING_COMMITS
from tests.compat.conftest import no_sessions_left
from tests.compat.test_openai_realtime import AUDIO_24K, transcription_session
from tests.fakes.providers import upstream
from tests.servers import running_gateway
from tests.speech import BECKETT_TEXT, normalize

PIECE = 9600  # 0.2 s of 24 kHz s16le: each commit is a valid (non-empty) buffer
COMMITS = MAX_PENDING_COMMITS + 8


async def test_commits_over_the_bound_are_error_events_and_the_session_goes_on() -> None:
    # The fake transcribes in real time: 40 commits of 0.2 s sent at once take it 8 s, so
    # the commits pile up faster than their finals come back.
    async with upstream("deepgram", speed=1.0) as dg:
        with running_gateway(**dg.settings(), idle_timeout=30.0) as gw:
            url = f"{gw.ws_url}/v1/realtime?intent=transcription"
            async with websockets.connect(url, additional_headers={
                    "Authorization": f"Bearer {gw.dev_key}"}) as ws:
                assert json.loads(await ws.recv())["type"] == "session.created"
                session = transcription_session(None)
                session["audio"]["input"]["transcription"]["model"] = "deepgram.nova-3"
                await ws.send(json.dumps({"type": "session.update", "session": session}))
                for i in range(COMMITS):
                    piece = AUDIO_24K[i * PIECE:(i + 1) * PIECE]
                    await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                              "audio": base64.b64encode(piece).decode()}))
                    await ws.send(json.dumps({"type": "input_audio_buffer.commit",
                                              "event_id": f"commit-{i}"}))
                events = await read_until(ws, lambda got: settled(got) == COMMITS)
                refused = [e for e in events if e["type"] == "error"]
                committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
                completed = [e for e in events if e["type"] ==
                             "conversation.item.input_audio_transcription.completed"]
                # Every commit is answered: taken (and transcribed) or refused, by name.
                assert refused, "40 commits at once never exceeded the bound"
                assert len(committed) + len(refused) == COMMITS
                assert len(committed) >= MAX_PENDING_COMMITS
                assert {e["item_id"] for e in completed} == {e["item_id"] for e in committed}
                for error in refused:
                    assert error["error"]["code"] == "too_many_pending_commits", error
                    assert f"{MAX_PENDING_COMMITS} commits" in error["error"]["message"]
                    assert error["error"]["event_id"].startswith("commit-")
                # The provider caught up: a commit is taken again.
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(AUDIO_24K[:PIECE]).decode()}))
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
                more = await read_until(ws, lambda got: any(
                    e["type"] == "conversation.item.input_audio_transcription.completed"
                    for e in got))
                assert not [e for e in more if e["type"] == "error"], more
                # Each item's transcript is the audio committed with it: the items, in order,
                # read the recording from its start (no item acknowledged before its words).
                texts = {e["item_id"]: e["transcript"] for e in [*events, *more] if e["type"]
                         == "conversation.item.input_audio_transcription.completed"}
                order = [e["item_id"] for e in [*events, *more]
                         if e["type"] == "input_audio_buffer.committed"]
                words = normalize(" ".join(texts[item] for item in order))
                assert len(words) >= 8 and words == normalize(BECKETT_TEXT)[:len(words)], words
            await no_sessions_left(gw)


def settled(events: list[dict[str, Any]]) -> int:
    """Commits answered for good: refused, or committed and completed."""
    refused = sum(e["type"] == "error" for e in events)
    completed = sum(e["type"] == "conversation.item.input_audio_transcription.completed"
                    for e in events)
    return refused + completed


async def read_until(ws: Any, done: Any, within: float = 60.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while not done(events):
            events.append(json.loads(await ws.recv()))
    return events
