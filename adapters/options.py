"""What a model can do and what a session asks for: `Capabilities`, `ModelInfo`,
`StreamOptions`, and `check_options`, which reconciles the two (applied, ignored or downgraded,
reported to the client in ``session.created``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

CANONICAL_SAMPLE_RATE = 16_000


OptionStatus = Literal["applied", "ignored", "downgraded"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a model can honour; checked before connecting (see `check_options`)."""

    streaming: bool = True  # native streaming (False: segmented batch, e.g. Groq)
    interim_results: bool = True
    word_timestamps: bool = True
    diarization: bool = False
    custom_vocabulary: bool = False
    language_detection: bool = False
    initial_prompt: bool = False
    temperature: bool = False
    punctuation: bool = True
    # ISO 639-1 codes; empty = any language the provider takes.
    languages: tuple[str, ...] = ()
    # The PCM rate the adapter wants; the session core resamples to it.
    input_sample_rate: int = CANONICAL_SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One entry of the ``GET /v1/models`` catalogue."""

    id: str  # "provider.model"
    provider: str
    model: str
    display_name: str
    capabilities: Capabilities
    available: bool = True
    unavailable_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        caps = self.capabilities
        return {
            "id": self.id,
            "provider": self.provider,
            "display_name": self.display_name,
            "streamable": caps.streaming,
            "available": self.available,
            "unavailable_reason": self.unavailable_reason,
            "languages": list(caps.languages) or ["*"],
            "diarization": caps.diarization,
            "custom_vocabulary": caps.custom_vocabulary,
            "word_timestamps": caps.word_timestamps,
            "language_detection": caps.language_detection,
            "interim_results": caps.interim_results,
            "sample_rates": [8000, 16000, 22050, 24000, 32000, 44100, 48000],
        }


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Normalized session options (shared/API.md §1.2), after `check_options`."""

    language: str = "en"  # ISO 639-1 or "auto"
    punctuation: bool = True
    diarization: bool = False
    speakers_expected: int | None = None
    temperature: float | None = None
    initial_prompt: str | None = None
    custom_vocabulary: tuple[str, ...] = ()
    interim_results: bool = True
    sample_rate: int = CANONICAL_SAMPLE_RATE  # rate of the PCM handed to send_audio


def check_options(
    caps: Capabilities, options: StreamOptions
) -> tuple[StreamOptions, dict[str, OptionStatus], list[str]]:
    """Match requested options against a model's capabilities.

    Returns the options the adapter should use, a status per option the client set, and
    human-readable warnings for everything not applied as asked. Nothing is dropped silently.
    """
    status: dict[str, OptionStatus] = {}
    warnings: list[str] = []
    opts = options

    def unsupported(name: str, why: str, kind: OptionStatus = "ignored") -> None:
        status[name] = kind
        warnings.append(f"{name} {kind}: {why}")

    if options.language == "auto":
        if caps.language_detection:
            status["language"] = "applied"
        else:
            fallback = caps.languages[0] if caps.languages else "en"
            opts = _replace(opts, language=fallback)
            unsupported("language", f"model has no language detection; using {fallback!r}",
                        "downgraded")
    elif caps.languages and options.language not in caps.languages:
        # A model that cannot take the language is a client error, raised by the caller.
        status["language"] = "ignored"
        warnings.append(f"language {options.language!r} not offered by this model")
    else:
        status["language"] = "applied"

    if options.diarization:
        if caps.diarization:
            status["diarization"] = "applied"
            if options.speakers_expected is not None:
                status["speakers_expected"] = "applied"
        else:
            opts = _replace(opts, diarization=False, speakers_expected=None)
            unsupported("diarization", "model has no speaker labels")
            if options.speakers_expected is not None:
                unsupported("speakers_expected", "needs diarization")
    elif options.speakers_expected is not None:
        opts = _replace(opts, speakers_expected=None)
        unsupported("speakers_expected", "only used with diarization=true")

    if options.custom_vocabulary:
        if caps.custom_vocabulary:
            status["custom_vocabulary"] = "applied"
        elif caps.initial_prompt:
            status["custom_vocabulary"] = "downgraded"
            warnings.append("custom_vocabulary downgraded: passed to the model as a prompt")
        else:
            opts = _replace(opts, custom_vocabulary=())
            unsupported("custom_vocabulary", "model takes no vocabulary")
    if not options.punctuation:
        if caps.punctuation:
            status["punctuation"] = "applied"
        else:
            unsupported("punctuation", "model always punctuates")
    # Options a model either honours or drops: (name, asked for, supported, dropped value, why).
    for name, asked, supported, dropped, why in (
        ("initial_prompt", options.initial_prompt is not None, caps.initial_prompt, None,
         "model takes no prompt"),
        ("temperature", options.temperature is not None, caps.temperature, None,
         "model takes no temperature"),
        ("interim_results", options.interim_results, caps.interim_results, False,
         "model returns finals only"),
    ):
        if not asked:
            continue
        if supported:
            status[name] = "applied"
        else:
            opts = _replace(opts, **{name: dropped})
            unsupported(name, why)
    return opts, status, warnings


def _replace(options: StreamOptions, **changes: Any) -> StreamOptions:
    return dataclasses.replace(options, **changes)
