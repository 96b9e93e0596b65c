"""What the SDK-compatible front-ends cost, and what the stabilizer buys.

Part 1 — relay latency, Deepgram fake in echo mode (one interim result per 100 ms frame): the
same real-time stream through ``/v1/listen`` (Deepgram's protocol) and through our
``/v1/transcribe`` (verbose_json), p50/p99 of the time from a frame leaving the client to the
result naming it, and the difference.

Part 2 — the local engine on real speech at real-time pace, 1 and N streams: partial churn
(words shown then taken back, per 100 reference words) of the raw partials, of the settled
prefix (``stable_words``); time to the first partial, to the first settled word and to the
first ``/v1/realtime`` delta; and how many realtime items' deltas did not concatenate to their
completed text (append-only broken: should be 0).

    .venv/bin/python bench/bench_compat.py --seconds 10 --speech-seconds 20 --streams 1,4
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import connect  # noqa: E402

from bench.bench_local import churn  # noqa: E402
from tests.servers import running_gateway  # noqa: E402
from tests.speech import TWO_CITIES_TEXT, normalize, pcm  # noqa: E402

FRAME = 3200  # 100 ms at 16 kHz


def pct(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] * 1000 if data else float("nan")


# ---- part 1: relay latency ----------------------------------------------------------------


async def relay(url: str, headers: dict[str, str], end: str, seconds: float,
                parse: Any) -> list[float]:
    audio = pcm("beckett.wav")
    sent: dict[int, float] = {}
    latencies: list[float] = []
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        async def reader() -> None:
            async for raw in ws:
                index = parse(json.loads(raw))
                at = sent.pop(index, None) if index is not None else None
                if at is not None:
                    latencies.append(time.perf_counter() - at)

        task = asyncio.create_task(reader())
        total, next_at, stop = 0, time.perf_counter(), time.perf_counter() + seconds
        while next_at < stop:
            frame = audio[total % (len(audio) - FRAME):][:FRAME]
            total += len(frame)
            sent[total] = time.perf_counter()
            await ws.send(frame)
            next_at += 0.1
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await ws.send(end)
        async with asyncio.timeout(15):
            await task
    return latencies


def listen_index(m: dict[str, Any]) -> int | None:
    if m.get("type") != "Results":
        return None
    text = m["channel"]["alternatives"][0]["transcript"]
    return int(text[1:]) if text.startswith("b") else None


def native_index(m: dict[str, Any]) -> int | None:
    text = str(m.get("text", ""))
    return int(text[1:]) if m.get("type") == "transcript" and text.startswith("b") else None


async def part1(seconds: float, levels: list[int]) -> None:
    from tests.fakes.deepgram import FakeDeepgram

    async with FakeDeepgram(api_key="dg-bench", echo=True) as fake:
        with running_gateway(deepgram_api_key="dg-bench", deepgram_base_url=fake.url) as gw:
            auth = {"Authorization": f"Token {gw.dev_key}"}
            print(f"\nPart 1: relay latency through the Deepgram fake (echo), {seconds:g} s "
                  "real-time streams")
            print(f"{'streams':>8} {'listen p50':>11} {'p99':>7} {'native p50':>11} "
                  f"{'p99':>7} {'added p50':>10} {'p99':>7} {'results':>8}")
            for n in levels:
                listen = await asyncio.gather(*(relay(
                    f"{gw.ws_url}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000"
                    "&interim_results=true", auth, json.dumps({"type": "CloseStream"}),
                    seconds, listen_index) for _ in range(n)))
                native = await asyncio.gather(*(relay(
                    f"{gw.ws_url}/v1/transcribe?model=deepgram.nova-3&output_format="
                    "verbose_json", auth, json.dumps({"type": "close_stream"}), seconds,
                    native_index) for _ in range(n)))
                a = [x for run in listen for x in run]
                b = [x for run in native for x in run]
                print(f"{n:>8} {pct(a, .5):>11.2f} {pct(a, .99):>7.2f} {pct(b, .5):>11.2f} "
                      f"{pct(b, .99):>7.2f} {pct(a, .5) - pct(b, .5):>10.2f} "
                      f"{pct(a, .99) - pct(b, .99):>7.2f} {len(a):>8}", flush=True)


# ---- part 2: churn and first results on the local engine -------------------------------


async def native_run(url: str, key: str, audio: bytes) -> dict[str, Any]:
    transcripts: list[dict[str, Any]] = []
    first_partial = first_settled = None
    start = time.perf_counter()
    async with connect(f"{url}/v1/transcribe?output_format=verbose_json",
                       additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        async def send() -> None:
            for i in range(0, len(audio), FRAME):
                await ws.send(audio[i:i + FRAME])
                await asyncio.sleep(max(0.0, start + (i + FRAME) / 32000 - time.perf_counter()))
            await ws.send(json.dumps({"type": "close_stream"}))

        sender = asyncio.create_task(send())
        async for message in ws:
            m = json.loads(message)
            if m.get("type") != "transcript":
                continue
            now = time.perf_counter() - start
            words = m["text"].split()
            transcripts.append(m)
            if not m["is_final"] and first_partial is None and words:
                first_partial = now
            if m.get("stable_words", 0) and first_settled is None:
                first_settled = now
        await sender
    return {"raw": churn(transcripts), "settled": churn(transcripts, settled_only=True),
            "first_partial": first_partial,
            "first_settled": first_settled}


async def realtime_run(url: str, key: str, audio24: bytes) -> dict[str, Any]:
    first_delta = None
    deltas: dict[str, str] = {}
    completed: dict[str, str] = {}
    start = time.perf_counter()
    async with connect(f"{url}/v1/realtime?intent=transcription",
                       additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {
                "transcription": {"model": "local.tiny.en"},
                "turn_detection": {"type": "server_vad"}}}}}))
        step = 4800
        for i in range(0, len(audio24), step):
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(audio24[i:i + step]).decode()}))
            await asyncio.sleep(max(0.0, start + (i + step) / 48000 - time.perf_counter()))
            while True:
                try:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 0.001))
                except TimeoutError:
                    break
                if m["type"].endswith("transcription.delta"):
                    first_delta = first_delta or time.perf_counter() - start
                    deltas[m["item_id"]] = deltas.get(m["item_id"], "") + m["delta"]
                elif m["type"].endswith("transcription.completed"):
                    completed[m["item_id"]] = m["transcript"]
    broken = sum(deltas.get(i, "") != t for i, t in completed.items())
    return {"first_delta": first_delta, "items_not_matching": broken}


async def part2(speech_seconds: float, levels: list[int]) -> None:
    audio = pcm("two_cities.wav")[:int(speech_seconds * 32000)]
    audio24 = pcm("two_cities.wav", 24000)[:int(speech_seconds * 48000)]
    ref_words = len(normalize(TWO_CITIES_TEXT)) * min(1.0, speech_seconds / 44.37)
    with running_gateway() as gw:
        print(f"\nPart 2: local engine, two_cities.wav first {speech_seconds:g} s at real-time "
              f"pace (~{ref_words:.0f} reference words per stream)")
        print(f"{'streams':>8} {'churn raw':>10} {'settled':>8} "
              f"{'1st partial p50':>16} {'1st settled p50':>16} {'1st delta p50':>14} "
              f"{'items≠':>7}")
        for n in levels:
            nat = await asyncio.gather(*(native_run(gw.ws_url, gw.dev_key, audio)
                                         for _ in range(n)))
            rt = await asyncio.gather(*(realtime_run(gw.ws_url, gw.dev_key, audio24)
                                        for _ in range(n)))
            per100 = 100 / (ref_words * n)

            def p50(values: list[Any]) -> float:
                return pct([v for v in values if v is not None], .5) / 1000

            print(f"{n:>8} {sum(r['raw'] for r in nat) * per100:>10.1f} "
                  f"{sum(r['settled'] for r in nat) * per100:>8.1f} "
                  f"{p50([r['first_partial'] for r in nat]):>15.2f}s "
                  f"{p50([r['first_settled'] for r in nat]):>15.2f}s "
                  f"{p50([r['first_delta'] for r in rt]):>13.2f}s "
                  f"{sum(r['items_not_matching'] for r in rt):>7}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="part 1 stream length")
    parser.add_argument("--speech-seconds", type=float, default=20.0, help="part 2 audio")
    parser.add_argument("--streams", default="1,4")
    parser.add_argument("--part", choices=("1", "2", "both"), default="both")
    args = parser.parse_args()
    levels = [int(x) for x in args.streams.split(",")]
    if args.part in ("1", "both"):
        asyncio.run(part1(args.seconds, levels))
    if args.part in ("2", "both"):
        asyncio.run(part2(args.speech_seconds, levels))


if __name__ == "__main__":
    main()
