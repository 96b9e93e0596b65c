"""ElevenLabs Scribe v2 Realtime (``/v1/speech-to-text/realtime``) over our own WebSocket.

Protocol: https://elevenlabs.io/docs/api-reference/speech-to-text/v-1-speech-to-text-realtime
and the event reference (…/speech-to-text/realtime/event-reference); message shapes checked
against the ``elevenlabs`` SDK (``elevenlabs/realtime/``), whose client drives our fake in the
tests. Why not that client: it reports errors and the close through callbacks that print and
swallow exceptions, and connects without a timeout; we keep connect, errors and back-pressure
in our hands (docs/providers.md).
"""

from __future__ import annotations

import asyncio
import base64
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from adapters._keepalive import KeepaliveStream
from adapters._silence import SilenceClock
from adapters._ws import FINALIZE_QUIET
from adapters.base import (
    BYTES_PER_SAMPLE,
    Adapter,
    AdapterContext,
    Capabilities,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderWarning,
    StreamOptions,
    Transcript,
    Word,
)

PROVIDER = "elevenlabs"
# Audio is sent in chunks of at most this many ms (a too large chunk is refused with
# `chunk_size_exceeded`; the bound is not published, the SDK sends 8 KiB = 256 ms).
MAX_CHUNK_MS = 250
# A session that receives no audio for a while ends with `insufficient_audio_activity`; while
# the client is silent we send this much digital silence every KEEPALIVE_INTERVAL seconds
# (and take it back out of the provider's timestamps).
KEEPALIVE_INTERVAL = 5.0
KEEPALIVE_MS = 100
# After a manual commit with no segment open, an answer that does not come within this long
# means there was nothing to commit (the tail was already VAD-committed).
NO_ANSWER_WAIT = 1.0
# keyterms: at most 50, each at most 20 characters (SDK `_RealtimeSharedOptions.keyterms`).
MAX_KEYTERMS = 50
MAX_KEYTERM_CHARS = 20

MODELS: dict[str, tuple[str, Capabilities]] = {
    "scribe_v2_realtime": ("ElevenLabs Scribe v2 Realtime", Capabilities(
        custom_vocabulary=True, language_detection=True, initial_prompt=True)),
}

# message_type -> (error class, retryable); every type the SDK's RealtimeEvents lists.
ERRORS: dict[str, tuple[type[ProviderError], bool]] = {
    "auth_error": (ProviderAuthError, False),
    "quota_exceeded": (ProviderAuthError, False),
    "unaccepted_terms": (ProviderAuthError, False),
    "rate_limited": (ProviderRateLimited, True),
    "queue_overflow": (ProviderRateLimited, True),
    "resource_exhausted": (ProviderUnavailable, True),
    "transcriber_error": (ProviderUnavailable, True),
    "error": (ProviderUnavailable, True),
    "session_time_limit_exceeded": (ProviderTimeout, True),
    "insufficient_audio_activity": (ProviderTimeout, True),
    "invalid_request": (ProviderBadRequest, False),
    "input_error": (ProviderProtocolError, False),
    "chunk_size_exceeded": (ProviderProtocolError, False),
    "commit_throttled": (ProviderProtocolError, True),
}


# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True, slots=True)
class Committed:
    text: str
    words: tuple[Word, ...]
    language: str | None


def parse_committed(message: dict[str, Any]) -> Committed:
    """``committed_transcript_with_timestamps``: words of type ``word``, with the punctuation
    items that follow them glued on (``spacing`` items dropped); times in seconds."""
    words: list[Word] = []
    for item in message.get("words") or ():
        kind = item.get("type") or "word"
        text = str(item.get("text") or "")
        if kind == "spacing" or not text.strip():
            continue
        if kind == "punctuation" and words:
            last = words[-1]
            words[-1] = Word(last.word + text.strip(), last.start, last.end, last.confidence,
                             last.speaker)
            continue
        logprob = item.get("logprob")
        words.append(Word(
            text.strip(), float(item.get("start") or 0.0), float(item.get("end") or 0.0),
            None if logprob is None else round(math.exp(float(logprob)), 4),
            None if item.get("speaker_id") is None else str(item["speaker_id"])))
    language = message.get("language_code")
    return Committed(str(message.get("text") or "").strip(), tuple(words),
                     None if language is None else str(language))


def error_of(message: dict[str, Any]) -> ProviderError | None:
    """An error message -> the error tree (None if `message` is no error)."""
    kind = str(message.get("message_type"))
    if kind not in ERRORS:
        return None
    cls, retryable = ERRORS[kind]
    reason = str(message.get("error") or kind)[:200]
    return cls(f"{kind}: {reason}", provider=PROVIDER, code=kind, retryable=retryable)


def ws_url(base: str, model: str, options: StreamOptions) -> str:
    """The realtime URL under the REST base (https -> wss), with the session's options."""
    parts = urlsplit(base.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    query: list[tuple[str, str]] = [
        ("model_id", model), ("audio_format", f"pcm_{options.sample_rate}"),
        ("commit_strategy", "vad"), ("include_timestamps", "true"),
    ]
    if options.language == "auto":
        query.append(("include_language_detection", "true"))
    else:
        query.append(("language_code", options.language))
    query.extend(("keyterms", term) for term in options.custom_vocabulary)
    return urlunsplit((scheme, parts.netloc, parts.path + "/v1/speech-to-text/realtime",
                       urlencode(query), ""))


# ------------------------------------------------------------------------------- stream


class ElevenLabsStream(KeepaliveStream):
    provider = PROVIDER
    keepalive_default = KEEPALIVE_INTERVAL

    def __init__(self, model: str, options: StreamOptions, context: AdapterContext) -> None:
        super().__init__(model, options, context)
        self._bytes_per_second = options.sample_rate * BYTES_PER_SAMPLE
        self._clock = SilenceClock()
        self._index = 0
        self._partial_sent = False
        self._last_end = 0.0  # stream time of the last committed word
        self._first_chunk = True
        self._buffered = False  # audio sent since our last commit
        self._committing = False  # a manual commit is waiting for its transcript
        self._closing = False
        self._quiet: asyncio.TimerHandle | None = None

    async def _start(self) -> None:
        terms = self.options.custom_vocabulary
        if len(terms) > MAX_KEYTERMS or any(len(t) > MAX_KEYTERM_CHARS for t in terms):
            raise ProviderBadRequest(
                f"custom_vocabulary for ElevenLabs: at most {MAX_KEYTERMS} terms of at most "
                f"{MAX_KEYTERM_CHARS} characters each", provider=PROVIDER, code="keyterms")
        base = self.context.base_url or "https://api.elevenlabs.io"
        await self._connect(ws_url(base, self.model, self.options),
                            {"xi-api-key": str(self.context.api_key)})
        await self._await_session_started()
        self._start_reader()
        self._start_keepalive()

    async def _await_session_started(self) -> None:
        """The first message is `session_started` or an error (a refused key, a quota)."""
        import json

        raw = await self._receive_first("session_started")
        try:
            message = json.loads(raw)
        except ValueError as exc:
            raise ProviderProtocolError("malformed message from upstream", provider=PROVIDER,
                                        code="malformed") from exc
        error = error_of(message) if isinstance(message, dict) else None
        if error is not None:
            raise error
        if not isinstance(message, dict) or message.get("message_type") != "session_started":
            raise ProviderProtocolError("expected session_started", provider=PROVIDER)

    async def _send_keepalive(self) -> None:
        await self._chunk(bytes(self._bytes_per_second * KEEPALIVE_MS // 1000), inserted=True)

    async def _send_audio(self, pcm: bytes) -> None:
        step = self._bytes_per_second * MAX_CHUNK_MS // 1000
        for i in range(0, len(pcm), step):
            await self._chunk(pcm[i:i + step])

    async def _chunk(self, pcm: bytes, *, inserted: bool = False, commit: bool = False) -> None:
        message: dict[str, Any] = {
            "message_type": "input_audio_chunk",
            "audio_base_64": base64.b64encode(pcm).decode("ascii"),
            "commit": commit, "sample_rate": self.options.sample_rate}
        if self._first_chunk and self.options.initial_prompt:
            message["previous_text"] = self.options.initial_prompt  # first chunk only
        self._first_chunk = False
        await self._send_json(message)
        self._clock.advance(len(pcm) / self._bytes_per_second, inserted=inserted)
        self._sent()
        self._buffered = self._buffered or (bool(pcm) and not inserted)

    async def _commit(self) -> None:
        self._buffered = False
        self._committing = True
        await self._chunk(b"", commit=True)
        self._arm_quiet(NO_ANSWER_WAIT)

    async def _finalize(self) -> None:
        self._expect_finalized()
        if self._buffered:
            await self._commit()
        elif not self._committing:  # nothing sent since our last commit was answered
            await self._finalized()
        # else: the commit in flight covers everything; its answer acknowledges this too

    async def _close_stream(self) -> None:
        # Commit the tail, wait for its committed transcript, then close ourselves.
        self._closing = True
        self._arm_flush_deadline("the last commit")
        if self._buffered:
            await self._commit()
        elif not self._committing:  # else the pending commit's answer closes
            await self._close_when_done()

    async def _close_when_done(self) -> None:
        if self._ws is not None:
            await self._ws.close(1000)

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("message_type")
        if kind == "partial_transcript":
            self._cancel_quiet()  # a segment is still open: its commit is yet to come
            text = str(message.get("text") or "").strip()
            if text and self.options.interim_results:
                self._partial_sent = True
                now = self._clock.to_stream(self._clock.provider_seconds)
                await self._emit(Transcript(f"el-{self._index}", False, text, self._last_end,
                                            max(self._last_end, now)))
        elif kind == "committed_transcript_with_timestamps":
            committed = parse_committed(message)
            open_before = self._partial_sent
            await self._close_segment(committed)
            if self._committing:
                # A commit has no marked answer and a VAD commit may be in flight before
                # ours: a committed transcript followed by quiet answers it. An empty one
                # with nothing open is ours (VAD commits only close speech).
                self._arm_quiet(0.0 if not (committed.text or open_before)
                                else FINALIZE_QUIET)
        elif kind == "warning":
            await self._emit(ProviderWarning("provider_warning",
                                             str(message.get("warning") or "")[:200]))
        else:
            error = error_of(message)
            if error is not None:
                raise error
        # `session_started`, the plain `committed_transcript` (its timestamped twin follows)
        # and the optional entity/redaction events carry nothing we relay.

    def _arm_quiet(self, delay: float) -> None:
        self._cancel_quiet()
        self._quiet = asyncio.get_running_loop().call_later(
            delay, lambda: self._spawn(self._commit_answered(), "commit-answered"))

    def _cancel_quiet(self) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = None

    async def _commit_answered(self) -> None:
        self._quiet = None
        if self._partial_sent or not self._committing:
            return  # a segment is open: its committed transcript re-arms the wait
        self._committing = False
        await self._finalized()
        if self._closing:
            await self._close_when_done()

    async def _shutdown(self) -> None:
        self._cancel_quiet()
        await super()._shutdown()

    async def _close_segment(self, committed: Committed | None) -> None:
        if committed is None or not (committed.text or self._partial_sent):
            if committed is None and self._partial_sent:
                committed = Committed("", (), None)
            else:
                return
        words = tuple(Word(w.word, self._clock.to_stream(w.start), self._clock.to_stream(w.end),
                           w.confidence, w.speaker) for w in committed.words)
        start = words[0].start if words else self._last_end
        end = words[-1].end if words else start
        await self._emit(Transcript(f"el-{self._index}", True, committed.text, start, end, words,
                                    language=committed.language))
        self._index += 1
        self._partial_sent = False
        self._last_end = end

    async def _on_upstream_closed(self) -> None:
        await self._close_segment(None)
        await self._finalized()


class ElevenLabsAdapter(Adapter):
    provider = PROVIDER
    credential_env = "ELEVENLABS_API_KEY"
    catalogue = MODELS

    def open_stream(self, model: str, options: StreamOptions) -> ElevenLabsStream:
        self.capabilities(model)
        return ElevenLabsStream(model, options, self.context)
