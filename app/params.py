"""Query parameters of a transcription session (shared/API.md §1.2), validated.

`parse_session_params` turns a multi-dict of query parameters into a `SessionRequest`, raising
`GatewayError(4400)` naming the first bad parameter. Front-ends that take their options some
other way (Prosa config message, Socket.IO events) build a `SessionRequest` the same way from a
plain mapping.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from adapters.base import ModelNotFound, StreamOptions
from adapters.registry import ModelId
from app.errors import GatewayError
from app.safejson import BadJson, loads_bounded

OUTPUT_FORMATS: tuple[str, ...] = ("text", "json", "verbose_json")
BATCH_OUTPUT_FORMATS: tuple[str, ...] = (*OUTPUT_FORMATS, "srt", "vtt")
KNOWN_PARAMS = frozenset({
    "model", "language", "output_format", "punctuation", "diarization", "speakers_expected",
    "temperature", "initial_prompt", "custom_vocabulary", "interim_results", "sample_rate",
    "encoding", "fallback",
    # credentials are parameters too, handled by app.credentials
    "api_key", "token",
})
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """Everything a client asked for, before capability checks."""

    model: str
    options: StreamOptions  # sample_rate = the client's PCM rate
    output_format: str = "text"
    fallback: tuple[str, ...] = ()
    unknown_params: tuple[str, ...] = ()
    explicit: frozenset[str] = field(default_factory=frozenset)


def _bad(name: str, why: str) -> GatewayError:
    return GatewayError(4400, f"invalid parameter {name}: {why}", code="invalid_parameter")


def parse_bool(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _bad(name, f"expected true/false, got {value[:20]!r}")


def parse_list(values: Iterable[str]) -> tuple[str, ...]:
    """Repeated parameter, one JSON array, or comma-separated — all accepted."""
    items: list[str] = []
    for value in values:
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = loads_bounded(text)
            except BadJson:  # not a JSON array: taken as comma-separated text
                parsed = None
            if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
                items.extend(x.strip() for x in parsed)
                continue
        items.extend(part.strip() for part in text.split(","))
    return tuple(item for item in items if item)


def _model_id(name: str, value: str) -> str:
    """A ``provider.model`` id, normalized (4400 naming the parameter if malformed)."""
    try:
        return str(ModelId.parse(value))
    except ModelNotFound:
        raise _bad(name, f"expected provider.model (e.g. local.tiny.en), "
                         f"got {value.strip()[:40]!r}") from None


def _number(name: str, value: str, lo: float, hi: float, *, integer: bool) -> float:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise _bad(name, f"expected {kind}, got {value[:20]!r}") from None
    if not lo <= number <= hi:
        raise _bad(name, f"{value} is outside {lo:g}-{hi:g}")
    return number


def parse_session_params(
    params: Mapping[str, list[str]], *, default_model: str, batch: bool = False
) -> SessionRequest:
    """Validate query parameters (values as lists, as in a multi-dict)."""

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[-1] if values else None

    model = _model_id("model", one("model") or default_model)

    language = (one("language") or "en").strip()
    if language != "auto":
        if not _LANGUAGE.match(language):
            raise _bad("language", f"expected an ISO 639-1 code or auto, got {language[:20]!r}")
        language = language.split("-")[0].lower()

    formats = BATCH_OUTPUT_FORMATS if batch else OUTPUT_FORMATS
    output_format = (one("output_format") or "text").strip()
    if output_format not in formats:
        raise _bad("output_format", f"expected one of {', '.join(formats)}")

    def flag(name: str, default: bool) -> bool:
        value = one(name)
        return default if value is None else parse_bool(name, value)

    punctuation = flag("punctuation", True)
    diarization = flag("diarization", False)
    interim = flag("interim_results", output_format == "verbose_json")

    speakers = one("speakers_expected")
    speakers_expected = (int(_number("speakers_expected", speakers, 1, 10, integer=True))
                         if speakers is not None else None)
    temp = one("temperature")
    temperature = _number("temperature", temp, 0, 1, integer=False) if temp is not None else None
    rate = one("sample_rate")
    sample_rate = int(_number("sample_rate", rate, 8000, 48000, integer=True)) if rate else 16000
    encoding = one("encoding") or "pcm_s16le"
    if encoding != "pcm_s16le":
        raise _bad("encoding", f"only pcm_s16le is supported, got {encoding[:20]!r}")
    prompt = one("initial_prompt")
    if prompt is not None and len(prompt) > 2000:
        raise _bad("initial_prompt", "longer than 2000 characters")
    vocabulary = parse_list(params.get("custom_vocabulary", []))
    if len(vocabulary) > 200:
        raise _bad("custom_vocabulary", "more than 200 terms")
    fallback = tuple(_model_id("fallback", item) for item in parse_list(params.get("fallback", [])))

    options = StreamOptions(
        language=language,
        punctuation=punctuation,
        diarization=diarization,
        speakers_expected=speakers_expected,
        temperature=temperature,
        initial_prompt=prompt,
        custom_vocabulary=vocabulary,
        interim_results=interim and output_format != "text",
        sample_rate=sample_rate,
    )
    unknown = tuple(sorted(name for name in params if name not in KNOWN_PARAMS))
    return SessionRequest(model=model, options=options, output_format=output_format,
                          fallback=fallback, unknown_params=unknown,
                          explicit=frozenset(params))
