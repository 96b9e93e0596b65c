"""What a client keeps to resume a stream on a new connection without losing or repeating a word.

A gateway that restarts (rolling deploy) delivers the finals of the audio it received, then
closes 1012; a dropped connection delivers nothing more. Either way the client reconnects and
replays the audio *since the end of the last final it received*, and shifts the new session's
times by the position replayed from, so the transcript continues on one monotonic timeline:

- `ReplayBuffer`: the audio sent since the last final (bounded; the oldest is dropped past the
  bound and reported as lost).
- `Timeline`: turns each connection's ``verbose_json`` events into the caller's events, shifted
  onto the stream's timeline, with segment ids unique across connections.

Used by `app.client.SpeechgateClient.stream`; other clients follow README "Reconnecting".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Event = dict[str, Any]

# Close codes after which the same request may succeed on a new connection: going away (1001),
# connection lost without a close frame (1006), server restarting (1012), try again later (1013),
# bad gateway from a proxy (1014). Everything else (4400, 4401, 4403, 4429...) is final.
RETRY_CLOSE_CODES = frozenset({1001, 1006, 1012, 1013, 1014})


@dataclass(frozen=True)
class ReconnectPolicy:
    """How hard `SpeechgateClient.stream` tries to resume a stream.

    attempts: reconnections in a row without a final in between (a final resets the count).
    backoff / max_backoff: seconds before the first retry, doubled each time up to the max.
    max_replay_seconds: audio kept since the last final; older audio is dropped (and reported
    in the ``reconnected`` event as ``lost_seconds``) so memory stays bounded.
    """

    attempts: int = 5
    backoff: float = 0.25
    max_backoff: float = 5.0
    max_replay_seconds: float = 120.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * (2 ** max(0, attempt - 1))))


class ReplayBuffer:
    """The audio sent since the last final, addressed by byte position in the whole stream."""

    def __init__(self, rate: int, max_seconds: float) -> None:
        self.bytes_per_second = 2 * rate
        self.limit = max(2, int(max_seconds * self.bytes_per_second) // 2 * 2)
        self.start = 0  # stream byte position of data[0]
        self.data = bytearray()
        self.lost = 0  # bytes dropped unfinalized because of the bound (since the last resume)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        over = len(self.data) - self.limit
        if over > 0:
            over += over % 2
            del self.data[:over]
            self.start += over
            self.lost += over

    def drop_before(self, seconds: float) -> None:
        """A final ended at `seconds` (stream time): its audio is never needed again."""
        position = int(round(seconds * self.bytes_per_second / 2)) * 2
        cut = min(max(0, position - self.start), len(self.data))
        if cut:
            del self.data[:cut]
            self.start += cut

    def seconds(self, position: int) -> float:
        return position / self.bytes_per_second


def _shift_words(words: list[Any], offset: float) -> list[Any]:
    out = []
    for word in words:
        if isinstance(word, dict):
            word = {**word}
            for name in ("start", "end"):
                if isinstance(word.get(name), int | float):
                    word[name] = round(word[name] + offset, 3)
        out.append(word)
    return out


class Timeline:
    """Rewrites each connection's ``verbose_json`` events for the caller's `output_format`."""

    def __init__(self, output_format: str) -> None:
        self.output_format = output_format
        self.connection = 0
        self.offset = 0.0  # seconds: where this connection's audio starts in the stream
        self.last_final_end = 0.0
        self.created = False

    def resume(self, offset: float) -> None:
        self.connection += 1
        self.offset = offset

    def segment(self, segment_id: Any) -> str:
        sid = str(segment_id)
        return sid if self.connection == 0 else f"r{self.connection}.{sid}"

    def shift(self, event: Event) -> Event:
        """The event on the stream's timeline (verbose_json shape)."""
        out = dict(event)
        kind = out.get("type")
        if kind == "transcript":
            for name in ("start", "end"):
                if isinstance(out.get(name), int | float):
                    out[name] = round(out[name] + self.offset, 3)
            out["segment_id"] = self.segment(out.get("segment_id"))
            if isinstance(out.get("words"), list):
                out["words"] = _shift_words(out["words"], self.offset)
            if out.get("is_final"):
                end = out.get("end")
                if isinstance(end, int | float):
                    self.last_final_end = max(self.last_final_end, float(end))
        elif kind in ("speech_started", "utterance_end") and isinstance(out.get("time"),
                                                                        int | float):
            out["time"] = round(out["time"] + self.offset, 3)
        return out

    def render(self, event: Event) -> Event | None:
        """`event` (already shifted) in the caller's format; None if that format omits it."""
        fmt, kind = self.output_format, event.get("type")
        if fmt == "verbose_json":
            return event
        if kind != "transcript":
            if fmt == "json" and kind == "error":
                body = {k: v for k, v in event.items() if k != "type"}
                return {"error": body}
            return None
        if fmt == "text":
            return {"text": event["text"]} if event.get("is_final") and event.get("text") else None
        out: Event = {"id": event.get("segment_id"), "text": event.get("text"),
                      "language": event.get("language"), "is_final": event.get("is_final"),
                      "start": event.get("start"), "end": event.get("end")}
        if "speaker" in event:
            out["speaker"] = event["speaker"]
        out["words"] = event.get("words", [])
        return out
