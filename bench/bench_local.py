"""Latency, accuracy and footprint of the local engine through the gateway's WebSocket.

Starts ``python -m app`` as a subprocess, then for each N in ``--streams`` runs N concurrent
clients that stream real speech (tests/speech.py) paced in real time to
``/v1/transcribe?model=local.tiny.en&output_format=verbose_json`` (shared/API.md §1) and print:

* first partial after speech onset and final after end of speech (p50 / p95 over every
  utterance of every stream). Onsets and ends come from the known audio: Silero VAD run
  offline over the whole file (no padding), not from the gateway's own events;
* streaming WER (concatenated finals vs the published text) next to the offline WER of the
  same model on the same file (faster-whisper ``transcribe`` of the whole file, beam 5);
* partial churn: shown words later taken back (a partial's words missing from the common
  prefix of the next display of its segment), per 100 reference words — for the raw partials
  and for their settled prefix (``stable_words``, what the demo page shows dark);
* CPU % (100 = one core) and peak RSS of the gateway process (psutil).

    .venv/bin/python -m bench.bench_local --streams 1,2,4,8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import websockets

from tests.servers import gateway_process
from tests.speech import BECKETT_TEXT, TWO_CITIES_TEXT, pcm, wer

RATE = 16_000
CHUNK_S = 0.1
TEXTS = {"two_cities.wav": TWO_CITIES_TEXT, "beckett.wav": BECKETT_TEXT}


@dataclass
class Speech:
    onset: float
    end: float


@dataclass
class StreamResult:
    t0: float = 0.0
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (audio-time, ev)

    def finals(self) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e.get("type") == "transcript" and e["is_final"]]


def speech_spans(audio: np.ndarray) -> list[Speech]:
    """Speech onsets/ends of the recording (offline Silero VAD, 400 ms silence, no padding)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    spans = get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=400, speech_pad_ms=0))
    return [Speech(s["start"] / RATE, s["end"] / RATE) for s in spans]


def offline_wer(audio: np.ndarray, text: str) -> float:
    from faster_whisper import WhisperModel

    from adapters.local.models import bundled_model_dir

    model = WhisperModel(str(bundled_model_dir()), device="cpu", compute_type="int8",
                         cpu_threads=2)
    segments, _ = model.transcribe(audio, language="en", beam_size=5, vad_filter=False)
    return wer(text, " ".join(s.text for s in segments))


async def run_client(url: str, data: bytes, result: StreamResult, start: float) -> None:
    step = int(CHUNK_S * RATE) * 2
    async with websockets.connect(url, max_size=2**22) as ws:
        created = json.loads(await ws.recv())
        assert created.get("type") == "session.created", created

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    continue
                event = json.loads(message)
                result.events.append((time.monotonic() - result.t0, event))
                if event.get("type") in ("session.ended", "error"):
                    return

        receiver = asyncio.create_task(receive())
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        result.t0 = time.monotonic()
        for i in range(0, len(data), step):
            # Real-time pacing: chunk k leaves at t0 + k * 0.1 s.
            await asyncio.sleep(max(0.0, result.t0 + (i // step) * CHUNK_S - time.monotonic()))
            await ws.send(data[i:i + step])
        await ws.send(json.dumps({"type": "close_stream"}))
        await asyncio.wait_for(receiver, 120)


def latencies(result: StreamResult, spans: list[Speech]) -> tuple[list[float], list[float]]:
    """(first partial after onset, final after end of speech) per utterance of one stream."""
    firsts, finals = [], []
    for span in spans:
        partials = [t for t, e in result.events if e.get("type") == "transcript"
                    and not e["is_final"] and t >= span.onset and e["start"] < span.end
                    and e["end"] > span.onset]
        if partials:
            firsts.append(min(partials) - span.onset)
        done = [t for t, e in result.events if e.get("type") == "transcript" and e["is_final"]
                and e["start"] < span.end and e["end"] > span.end - 0.5]
        if done:
            finals.append(min(done) - span.end)
    return firsts, finals


def churn(transcripts: list[dict[str, Any]], settled_only: bool = False) -> int:
    """Words shown then taken back, over a session's transcript events (verbose_json)."""
    from app.stabilizer import norm

    last: dict[str, list[str]] = {}
    taken = 0
    for e in transcripts:
        words = e["text"].split()
        if settled_only and not e["is_final"]:
            words = words[:e.get("stable_words", 0)]
        before = last.get(e["segment_id"], [])
        common = 0
        for x, y in zip(before, words, strict=False):
            if norm(x) != norm(y):
                break
            common += 1
        taken += len(before) - common
        last[e["segment_id"]] = words
    return taken


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


async def sample_process(proc: psutil.Process, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except TimeoutError:
            pass


async def bench_n(url: str, data: bytes, n: int, spans: list[Speech], text: str,
                  proc: psutil.Process, stagger: float = 0.0,
                  verbose: bool = False, ref_words: float | None = None) -> dict[str, float]:
    results = [StreamResult() for _ in range(n)]
    peak = [proc.memory_info().rss]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_process(proc, stop, peak))
    cpu_before = proc.cpu_times()
    wall_before = time.monotonic()
    start = time.monotonic() + 0.5  # every client connected before the audio starts
    await asyncio.gather(*(run_client(url, data, r, start + i * stagger)
                           for i, r in enumerate(results)))
    wall = time.monotonic() - wall_before
    cpu_after = proc.cpu_times()
    stop.set()
    await sampler
    firsts: list[float] = []
    finals: list[float] = []
    wers = []
    raw_churn = settled_churn = 0
    for r in results:
        transcripts = [e for _, e in r.events if e.get("type") == "transcript"]
        raw_churn += churn(transcripts)
        settled_churn += churn(transcripts, settled_only=True)
        f, g = latencies(r, spans)
        firsts += f
        finals += g
        wers.append(wer(text, " ".join(e["text"] for e in r.finals())))
        if verbose:
            print("    first partial:", " ".join(f"{x:.2f}" for x in f))
            print("    final:        ", " ".join(f"{x:.2f}" for x in g))
    cpu = ((cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)) / wall
    return {"n": n, "first_p50": pct(firsts, 50), "first_p95": pct(firsts, 95),
            "final_p50": pct(finals, 50), "final_p95": pct(finals, 95),
            "wer": statistics.mean(wers), "utterances": len(finals) / n,
            "churn": 100 * raw_churn / (n * (ref_words or len(text.split()))),
            "churn_settled": 100 * settled_churn / (n * (ref_words or len(text.split()))),
            "cpu": 100 * cpu, "rss_mib": peak[0] / 2**20}


async def main_async(args: argparse.Namespace) -> None:
    data = pcm(args.audio)
    if args.seconds:
        data = data[: int(args.seconds * RATE) * 2]
    audio = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    text = TEXTS[args.audio]
    ref_words = len(text.split()) * min(1.0, len(data) / len(pcm(args.audio)))
    spans = speech_spans(audio)
    print(f"audio {args.audio}: {len(audio) / RATE:.1f} s, {len(spans)} utterances (offline VAD)")
    offline = offline_wer(audio, text)
    print(f"offline WER (tiny.en, whole file, beam 5): {100 * offline:.1f} %")
    key = "sg_bench_" + os.urandom(8).hex()
    with gateway_process(env={"SPEECHGATE_DEV_KEY": key,
                              "SPEECHGATE_LOG_LEVEL": "warning"}) as (popen, port):
        proc = psutil.Process(popen.pid)
        url = (f"ws://127.0.0.1:{port}/v1/transcribe?model=local.tiny.en"
               f"&output_format=verbose_json&api_key={key}")
        print(f"gateway pid {popen.pid} on port {port}, idle RSS "
              f"{proc.memory_info().rss / 2**20:.0f} MiB, {psutil.cpu_count()} CPUs")
        print(f"{'N':>3} {'first partial p50/p95 s':>24} {'final p50/p95 s':>18} "
              f"{'WER %':>6} {'utt/stream':>10} {'churn raw/settled':>18} {'CPU %':>6} "
              f"{'peak RSS MiB':>12}")
        for n in args.streams:
            row = await bench_n(url, data, n, spans, text, proc, args.stagger, args.verbose,
                                ref_words)
            print(f"{n:>3} {row['first_p50']:>11.2f} / {row['first_p95']:<10.2f} "
                  f"{row['final_p50']:>8.2f} / {row['final_p95']:<7.2f} "
                  f"{100 * row['wer']:>6.1f} {row['utterances']:>10.1f} "
                  f"{row['churn']:>9.1f} / {row['churn_settled']:<6.1f} {row['cpu']:>6.0f} "
                  f"{row['rss_mib']:>12.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--streams", default="1,2,4,8",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--audio", default="two_cities.wav", choices=sorted(TEXTS))
    parser.add_argument("--seconds", type=float, default=0.0, help="use only the first S s")
    parser.add_argument("--stagger", type=float, default=0.0,
                        help="start stream i after i*S s (0: all in lockstep, the worst case)")
    parser.add_argument("--verbose", action="store_true", help="latencies per utterance")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
