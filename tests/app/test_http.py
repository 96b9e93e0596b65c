"""HTTP endpoints, batch transcription and the CLI against a real gateway."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from app.audio import wav_bytes
from tests.servers import ROOT, Gateway
from tests.speech import BECKETT_TEXT, asset, pcm, wer

BECKETT = pcm("beckett.wav")


async def test_models_catalogue(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        body = (await http.get("/v1/models")).json()
    models = {m["id"]: m for m in body["models"]}
    tiny = models["local.tiny.en"]
    assert tiny["available"] is True and tiny["streamable"] is True
    assert tiny["word_timestamps"] is True and tiny["languages"] == ["en"]
    for m in models.values():
        assert set(m) >= {"id", "provider", "display_name", "streamable", "available",
                          "languages", "diarization", "custom_vocabulary", "word_timestamps",
                          "language_detection", "sample_rates"}


async def test_health_ready_metrics(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        metrics = (await http.get("/metrics")).text
    assert "speechgate_sessions_total" in metrics


async def test_batch_wav_json(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http:
        response = await http.post("/v1/transcribe?output_format=json",
                                   content=asset("beckett.wav").read_bytes(),
                                   headers={"X-API-Key": gateway.dev_key})
    assert response.status_code == 200, response.text
    body = response.json()
    assert wer(BECKETT_TEXT, body["text"]) <= 0.2
    assert abs(body["duration"] - len(BECKETT) / 32000) < 0.05
    assert body["segments"] and body["words"]


async def test_batch_raw_pcm_and_subtitles(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http:
        srt = await http.post(f"/v1/transcribe?output_format=srt&api_key={gateway.dev_key}",
                              content=BECKETT, headers={"Content-Type": "audio/pcm;rate=16000"})
        vtt = await http.post(f"/v1/transcribe?output_format=vtt&api_key={gateway.dev_key}",
                              content=wav_bytes(BECKETT, 16000))
    assert srt.status_code == 200 and srt.text.startswith("1\n00:00:0")
    assert " --> " in srt.text
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT\n\n00:00:0")


async def test_batch_errors_are_json_with_status(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http:
        no_key = await http.post("/v1/transcribe", content=b"RIFF")
        garbage = await http.post("/v1/transcribe", content=b"this is not audio" * 100,
                                  headers={"X-API-Key": gateway.dev_key})
        bad_param = await http.post("/v1/transcribe?temperature=9", content=BECKETT,
                                    headers={"X-API-Key": gateway.dev_key})
    assert no_key.status_code == 401 and "key" in no_key.json()["error"]["message"]
    assert garbage.status_code == 400 and "audio" in garbage.json()["error"]["message"]
    assert bad_param.status_code == 400 and "temperature" in bad_param.json()["error"]["message"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "speechgate"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


async def test_cli_transcribes_a_file(gateway: Gateway, tmp_path: Path) -> None:
    # A 48 kHz file in another container: the CLI decodes it with PyAV.
    src = asset("two_cities.wav")
    result = await asyncio.to_thread(
        _cli, "transcribe", str(src), "--url", gateway.ws_url, "--key", gateway.dev_key)
    assert result.returncode == 0, result.stderr
    assert "best of times" in result.stdout.lower()


async def test_cli_reports_causes(gateway: Gateway, tmp_path: Path) -> None:
    missing = await asyncio.to_thread(_cli, "transcribe", str(tmp_path / "nope.wav"),
                                      "--url", gateway.ws_url, "--key", gateway.dev_key)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    bad_key = await asyncio.to_thread(_cli, "transcribe", str(asset("beckett.wav")),
                                      "--url", gateway.ws_url, "--key", "sg_nope")
    assert bad_key.returncode == 1 and "4401" in bad_key.stderr
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 50)
    undecodable = await asyncio.to_thread(_cli, "transcribe", str(junk), "--url",
                                          gateway.ws_url, "--key", gateway.dev_key)
    assert undecodable.returncode == 1 and "decode" in undecodable.stderr


async def test_cli_lists_models(gateway: Gateway) -> None:
    result = await asyncio.to_thread(_cli, "models", "--url", gateway.ws_url)
    assert result.returncode == 0, result.stderr
    assert "local.tiny.en" in result.stdout
