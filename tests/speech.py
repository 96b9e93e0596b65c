"""Real human speech for tests and benchmarks, with the known text of each recording.

The recordings ship in the `moonshine-voice` wheel (public-domain readings); we only read its
``assets/`` folder and never import the package (its runtime needs are not installed).
The reference texts are the published texts that were read aloud, not model output.
"""

from __future__ import annotations

import importlib.util
import re
import wave
from pathlib import Path

import numpy as np
import soxr

BECKETT_TEXT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
TWO_CITIES_TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the "
    "season of Light, it was the season of Darkness, it was the spring of hope, it was the "
    "winter of despair, we had everything before us, we had nothing before us, we were all "
    "going direct to Heaven, we were all going direct the other way - in short, the period was "
    "so far like the present period, that some of its noisiest authorities insisted on its "
    "being received, for good or for evil, in the superlative degree of comparison only."
)


def assets_dir() -> Path:
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or spec.origin is None:
        raise RuntimeError("test speech needs the moonshine-voice wheel: run `make test` "
                           "(it installs it with --no-deps)")
    return Path(spec.origin).parent / "assets"


def asset(name: str) -> Path:
    return assets_dir() / name


def read_wav(path: Path | str) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the sample rate of a PCM WAV file."""
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        channels = wav.getnchannels()
        width = wav.getsampwidth()
        raw = wav.readframes(wav.getnframes())
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit PCM, got {8 * width}-bit")
    samples = np.frombuffer(raw, dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype("<i2")
    return samples, rate


def pcm(name: str, rate: int = 16000) -> bytes:
    """A recording as s16le mono PCM bytes at `rate`."""
    samples, src_rate = read_wav(asset(name))
    if src_rate != rate:
        out = soxr.resample(samples.astype(np.float32) / 32768.0, src_rate, rate, quality="HQ")
        samples = np.clip(out * 32768.0, -32768, 32767).astype("<i2")
    return samples.astype("<i2").tobytes()


def normalize(text: str) -> list[str]:
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return text.split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after lower-casing and removing punctuation."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)
