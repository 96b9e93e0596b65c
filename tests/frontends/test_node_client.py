"""The npm ``socket.io-client`` (run by node) against ``/api/stt-realtime-socket``.

``tests/node/cantonese_client.mjs`` follows the cantonese.ai example step by step; this test
gives it real speech and checks what it saw. The node package is installed with
``npm ci --prefix tests/node`` (done here when missing).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Gateway
from tests.speech import BECKETT_TEXT, pcm, wer

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
SCRIPT = NODE_DIR / "cantonese_client.mjs"
MAX_WER = 0.25


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        raise RuntimeError("node is not installed (Debian: apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
                       check=True, timeout=300, stdout=subprocess.DEVNULL)
    return exe


async def run_client(node: str, gateway: Gateway, key: str, pcm_file: Path,
                     speed: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        node, str(SCRIPT), gateway.http_url, key, str(pcm_file), str(speed),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 150)
    assert proc.returncode == 0, stderr.decode()
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


async def test_cantonese_example_with_real_speech(node: str, gateway: Gateway,
                                                  tmp_path: Path) -> None:
    audio = tmp_path / "beckett.pcm"
    audio.write_bytes(pcm("beckett.wav"))
    result = await run_client(node, gateway, gateway.dev_key, audio, speed=2)
    assert result["connected"] and "connectError" not in result
    events = result["events"]
    assert events[0] == ["session-started", None]
    assert events[-1] == ["session-closed", {"code": 1000, "reason": "session ended"}]
    messages = [payload for name, payload in events if name == "transcript-message"]
    kinds = {m["message_type"] for m in messages}
    assert kinds == {"session_started", "partial_transcript", "committed_transcript",
                     "committed_transcript_with_timestamps"}, kinds
    committed = " ".join(m["text"] for m in messages
                         if m["message_type"] == "committed_transcript")
    assert wer(BECKETT_TEXT, committed) <= MAX_WER, committed
    timed = [m for m in messages if m["message_type"] == "committed_transcript_with_timestamps"]
    assert all(w["end"] >= w["start"] >= 0 for m in timed for w in m["words"])
    assert not [name for name, _ in events if name == "session-error"]


async def test_bad_key_gets_connect_error(node: str, gateway: Gateway, tmp_path: Path) -> None:
    audio = tmp_path / "silence.pcm"
    audio.write_bytes(bytes(3200))
    result = await run_client(node, gateway, "sg_not_a_key", audio, speed=1)
    assert not result["connected"]
    assert result["connectError"]["message"] == "invalid API key"
    assert result["connectError"]["data"]["status"] == 401
    assert result["connectError"]["data"]["code"] == 4401
