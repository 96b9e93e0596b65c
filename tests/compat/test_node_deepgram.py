"""The npm ``@deepgram/sdk`` live client (run by node), pointed at ``/v1/listen`` by its
environment and key only (``tests/node/deepgram_client.mjs``): real speech at real-time pace on
the local engine and as fast as allowed through the Deepgram fake, a Finalize half-way, then
CloseStream; a wrong key refused. Installed with ``npm ci --prefix tests/node`` when missing."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.compat.conftest import no_sessions_left
from tests.servers import Gateway
from tests.speech import BECKETT_TEXT, pcm, wer

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
SCRIPT = NODE_DIR / "deepgram_client.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        raise RuntimeError("node is not installed (Debian: apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "@deepgram" / "sdk").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
                       check=True, timeout=300, stdout=subprocess.DEVNULL)
    return exe


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "beckett.pcm"
    path.write_bytes(pcm("beckett.wav"))
    return path


async def run(node: str, gw: Gateway, key: str, audio: Path, speed: float,
              model: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        node, str(SCRIPT), gw.http_url, gw.ws_url, key, str(audio), str(speed), model,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


def finals(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in result["messages"] if m.get("type") == "Results" and m["is_final"]]


def final_text(result: dict[str, Any]) -> str:
    return " ".join(m["channel"]["alternatives"][0]["transcript"] for m in finals(result)
                    if m["channel"]["alternatives"][0]["transcript"])


@pytest.mark.parametrize(("model", "speed"), [("local.tiny.en", 1), ("nova-3", 0)])
async def test_node_sdk_streams_finalizes_and_closes(node: str, compat_gateway: Gateway,
                                                     speech: Path, model: str,
                                                     speed: float) -> None:
    result = await run(node, compat_gateway, compat_gateway.dev_key, speech, speed, model)
    assert result["opened"] and "error" not in result, result.get("error")
    assert result["close"]["code"] == 1000
    assert wer(BECKETT_TEXT, final_text(result)) <= 0.2, final_text(result)
    assert any(m["from_finalize"] for m in finals(result))
    assert any(not m["is_final"] for m in result["messages"] if m.get("type") == "Results")
    assert result["messages"][-1]["type"] == "Metadata"
    await no_sessions_left(compat_gateway)


async def test_node_sdk_wrong_key(node: str, compat_gateway: Gateway, speech: Path) -> None:
    result = await run(node, compat_gateway, "sg_wrong_key", speech, 0, "local.tiny.en")
    assert not result["opened"]
    assert "401" in result["error"]
    assert not result["messages"]
