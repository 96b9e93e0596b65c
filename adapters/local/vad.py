"""Streaming voice-activity detection with the Silero VAD model that faster-whisper ships.

Two layers, both incremental (feed audio in any chunk sizes, state carries across chunks):

* `SileroVad` turns PCM into one speech probability per 512-sample window (32 ms at 16 kHz).
  faster-whisper 1.2.1's ``SileroVADModel.__call__`` runs a whole file at once: each window is
  prefixed with the last 64 samples of the previous window (the "context") and the LSTM state
  ``h``/``c`` flows from window to window. We run the same ONNX session window batch by window
  batch, carrying context, ``h`` and ``c`` ourselves, which gives bit-identical probabilities
  to the offline call (see tests/adapters/test_vad.py).
* `VoiceActivitySegmenter` is the endpointing state machine on top (the hysteresis of
  ``faster_whisper.vad.get_speech_timestamps``: speech starts at ``threshold``, ends after
  ``min_silence_ms`` below ``neg_threshold``). It yields `SpeechStart`, `SpeechEnd` and
  `Utterance` events with absolute sample offsets, keeps only the audio of the open utterance
  (plus padding), and cuts utterances longer than ``max_utterance_s`` at the least speech-like
  window of their second half, so a reader who never pauses still gets bounded segments.

Use it to endpoint a live stream (the local engine) or to cut audio into speech segments at
voice-activity boundaries for a batch API (e.g. the Groq adapter)::

    seg = VoiceActivitySegmenter()
    for event in seg.feed(pcm_bytes):      # s16le mono 16 kHz bytes or float32 samples
        if isinstance(event, Utterance):
            send(event.audio, event.start / 16000)
    for event in seg.flush():               # end of audio: the open utterance, if any
        ...

The ONNX session is shared by every segmenter in the process (``get_vad_model`` is cached and
onnxruntime sessions are safe to run from several threads); each segmenter has its own state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from faster_whisper.vad import get_vad_model

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WINDOW = 512  # samples per VAD window at 16 kHz (Silero's fixed frame size)
CONTEXT = 64  # samples of the previous window prefixed to each window

UtteranceReason = Literal["silence", "max_length", "cut", "flush"]


# ------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """Speech began at ``sample`` (start of the first window above the threshold)."""

    sample: int


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """Speech ended at ``sample`` (start of the silence that lasted ``min_silence_ms``)."""

    sample: int


@dataclass(frozen=True, slots=True)
class Utterance:
    """A closed stretch of speech: float32 ``audio`` covering samples ``[start, end)``.

    ``start``/``end`` include the padding; ``reason`` says what closed it: end of speech
    (``silence``), the length limit (``max_length``), an explicit `cut` or `flush`.
    """

    start: int
    end: int
    audio: np.ndarray
    reason: UtteranceReason


VadEvent = SpeechStart | SpeechEnd | Utterance


@dataclass(frozen=True, slots=True)
class VadConfig:
    threshold: float = 0.5
    # Probability below which a window counts as silence (None: threshold - 0.15).
    neg_threshold: float | None = None
    # Silence needed to end speech; the main latency/segmentation trade-off.
    min_silence_ms: int = 400
    # Speech shorter than this (clicks, breaths) yields no `Utterance`.
    min_speech_ms: int = 200
    # Audio kept on each side of the speech.
    speech_pad_ms: int = 200
    # Longest utterance; longer speech is cut at its quietest window.
    max_utterance_s: float = 20.0


# --------------------------------------------------------------------------- probabilities


class SileroVad:
    """Incremental Silero VAD: one speech probability per complete 512-sample window."""

    def __init__(self) -> None:
        self._session = get_vad_model().session
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities of the windows completed by `audio` (float32 at 16 kHz)."""
        data = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        full = len(data) // WINDOW * WINDOW
        self._pending = data[full:].copy()
        if full == 0:
            return np.zeros(0, dtype=np.float32)
        windows = data[:full].reshape(-1, WINDOW)
        contexts = np.concatenate([self._context[None, :], windows[:-1, -CONTEXT:]], axis=0)
        batch = np.concatenate([contexts, windows], axis=1)
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = windows[-1, -CONTEXT:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)


# ------------------------------------------------------------------------------ segmenter


def pcm_to_float(pcm: bytes | np.ndarray) -> np.ndarray:
    """s16le bytes (or int16/float32 samples) -> float32 samples in [-1, 1]."""
    if isinstance(pcm, bytes | bytearray | memoryview):
        return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) / 32768.0
    return pcm.astype(np.float32, copy=False)


class VoiceActivitySegmenter:
    """Feed 16 kHz audio, get speech start/end and utterance events (absolute sample offsets).

    Not thread-safe: one segmenter per stream, fed from one place (it may run in a worker
    thread, since the ONNX call costs ~0.1 ms per window).
    """

    def __init__(self, config: VadConfig | None = None) -> None:
        self.config = cfg = config or VadConfig()
        self._vad = SileroVad()
        self._neg = cfg.neg_threshold if cfg.neg_threshold is not None else max(
            cfg.threshold - 0.15, 0.01)
        self._min_silence = SAMPLE_RATE * cfg.min_silence_ms // 1000
        self._min_speech = SAMPLE_RATE * cfg.min_speech_ms // 1000
        self._pad = SAMPLE_RATE * cfg.speech_pad_ms // 1000
        self._max_len = int(SAMPLE_RATE * cfg.max_utterance_s)
        # Audio kept: samples [_buf_start, _buf_start + len(_buf)).
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0
        self._windows = 0  # VAD windows processed
        self._triggered = False
        self._onset = 0  # first speech window of the open utterance
        self._utt_start = 0  # start of the open utterance, padding included
        self._last_end = 0  # end of the previous utterance (utterances never overlap)
        self._temp_end = 0  # start of the current run of silence inside speech (0: none)
        # (window start sample, probability) of the open utterance, for length cuts.
        self._probs: list[tuple[int, float]] = []

    # ---- state ----------------------------------------------------------------------------

    @property
    def samples(self) -> int:
        """Samples fed so far."""
        return self._buf_start + len(self._buf)

    @property
    def in_speech(self) -> bool:
        return self._triggered

    def open_utterance(self) -> tuple[int, np.ndarray] | None:
        """Start sample and audio so far of the utterance in progress, if speech is on."""
        if not self._triggered:
            return None
        return self._utt_start, self._buf[self._utt_start - self._buf_start:]

    def pending_utterance(self) -> Utterance | None:
        """The utterance that silence is about to close, once its trailing padding is in.

        While the speaker pauses (below ``neg_threshold`` for at least ``speech_pad_ms``),
        this is exactly the `Utterance` that `feed` will emit if the pause reaches
        ``min_silence_ms``; a consumer may start working on it early (speculatively).
        """
        if not self._triggered or not self._temp_end:
            return None
        if self._temp_end - self._onset < self._min_speech:
            return None
        end = self._temp_end + self._pad
        if end > self.samples:
            return None
        audio = self._buf[self._utt_start - self._buf_start:end - self._buf_start].copy()
        return Utterance(self._utt_start, end, audio, "silence")

    def onset(self) -> int | None:
        """Sample where the speech of the open utterance began (None outside speech)."""
        return self._onset if self._triggered else None

    # ---- feeding --------------------------------------------------------------------------

    def feed(self, pcm: bytes | np.ndarray) -> list[VadEvent]:
        """Add audio; returns the events it completes, in order."""
        audio = pcm_to_float(pcm)
        if len(audio) == 0:
            return []
        self._buf = np.concatenate([self._buf, audio])
        events: list[VadEvent] = []
        for prob in self._vad(audio):
            start = self._windows * WINDOW
            self._windows += 1
            self._step(start, float(prob), events)
        self._trim()
        return events

    def cut(self) -> list[VadEvent]:
        """Close the open utterance here (``reason="cut"``), for an explicit finalize.

        If the speaker was already pausing, speech ends (`SpeechEnd`) and the next word
        starts a new `SpeechStart`; otherwise speech goes on in a new utterance from here.
        """
        if not self._triggered:
            return []
        events: list[VadEvent] = []
        if self._temp_end:
            events.append(SpeechEnd(self._temp_end))
            self._close(self.samples, "cut", events)
            self._triggered = False
            self._temp_end = 0
            self._trim()
            return events
        self._close(self.samples, "cut", events)
        self._utt_start = self._onset = self.samples
        self._probs = []
        return events

    def flush(self) -> list[VadEvent]:
        """End of audio: close the open utterance (``reason="flush"``) and end speech."""
        if not self._triggered:
            return []
        events: list[VadEvent] = []
        end = self.samples
        events.append(SpeechEnd(self._temp_end or end))
        self._close(end, "flush", events)
        self._triggered = False
        self._temp_end = 0
        self._trim()
        return events

    # ---- internals ------------------------------------------------------------------------

    def _step(self, start: int, prob: float, events: list[VadEvent]) -> None:
        if prob >= self.config.threshold:
            self._temp_end = 0
            if not self._triggered:
                self._triggered = True
                self._onset = start
                self._utt_start = max(start - self._pad, self._last_end, self._buf_start)
                self._probs = []
                events.append(SpeechStart(start))
        if not self._triggered:
            return
        self._probs.append((start, prob))
        end = start + WINDOW
        if prob < self._neg:
            if not self._temp_end:
                self._temp_end = start
            if end - self._temp_end >= self._min_silence:
                speech_end = self._temp_end
                events.append(SpeechEnd(speech_end))
                if speech_end - self._onset >= self._min_speech:
                    self._close(min(speech_end + self._pad, end), "silence", events)
                else:
                    self._last_end = max(self._last_end, self._utt_start)
                self._triggered = False
                self._temp_end = 0
                return
        if end - self._utt_start >= self._max_len:
            cut = self._quietest_point()
            self._close(cut, "max_length", events)
            self._utt_start = cut
            self._onset = max(self._onset, cut)
            self._probs = [(s, p) for s, p in self._probs if s >= cut]
            if self._temp_end and self._temp_end < cut:
                self._temp_end = cut

    def _quietest_point(self) -> int:
        """Start of the least speech-like window in the second half of the open utterance."""
        half = self._utt_start + self._max_len // 2
        candidates = [(p, -s) for s, p in self._probs if s >= half]
        if not candidates:
            return self.samples
        _, neg_start = min(candidates)
        return -neg_start

    def _close(self, end: int, reason: UtteranceReason, events: list[VadEvent]) -> None:
        start = self._utt_start
        audio = self._buf[start - self._buf_start:end - self._buf_start].copy()
        self._last_end = end
        if len(audio):
            events.append(Utterance(start, end, audio, reason))

    def _trim(self) -> None:
        """Drop audio no longer needed: keep the open utterance, or the padding before speech."""
        keep_from = self._utt_start if self._triggered else max(
            self.samples - self._pad - WINDOW, self._last_end)
        keep_from = min(keep_from, self.samples)
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
