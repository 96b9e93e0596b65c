"""Session events -> OpenAI Realtime transcription items (``/v1/realtime``).

With server VAD every final segment of the provider is one item: ``speech_started`` when it
begins, append-only ``delta`` events from its partials (through `Stabilizer`), then
``speech_stopped``, ``committed`` and ``completed``. With ``turn_detection: null`` the client's
``input_audio_buffer.commit`` closes the item: everything transcribed since the previous commit
(the session is finalized to get it) is that item's text. ``clear`` discards it the same way.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from adapters import base as ab
from app.stabilizer import Stabilizer


def event_id() -> str:
    return "event_" + uuid.uuid4().hex[:20]


def new_item_id() -> str:
    return "item_" + uuid.uuid4().hex[:20]


@dataclass
class Item:
    id: str
    start: float
    stabilizer: Stabilizer = field(default_factory=Stabilizer)
    finals: list[str] = field(default_factory=list)
    committed: bool = False
    end: float = 0.0

    def text(self, partial: str = "") -> str:
        return " ".join(t for t in (*self.finals, partial) if t.strip())


class ItemTracker:
    """Builds the OpenAI events for one connection; `server_vad` may change between turns."""

    def __init__(self, server_vad: bool) -> None:
        self.server_vad = server_vad
        self.current: Item | None = None
        self.previous_id: str | None = None
        # one entry per finalize the reader asked for: the committed item, or None (a clear)
        self.pending: deque[Item | None] = deque()

    # ---- what the client asked (called by the reader before finalizing the session) -----

    def commit(self, time: float) -> list[dict[str, Any]]:
        """Manual commit: the open item (made now if nothing was heard) is committed."""
        item = self.current or Item(new_item_id(), time)
        self.current = None
        item.committed = True
        item.end = max(item.end, time)
        self.pending.append(item)
        out = [self._committed(item)]
        delta = item.stabilizer.partial(item.text())  # what was settled before the commit
        if delta:
            out.append(self._delta(item, delta))
        return out

    def clear(self) -> None:
        """Everything heard since the last commit is discarded (up to the finalize's end)."""
        self.current = None
        self.pending.append(None)

    # ---- what the session said ------------------------------------------------------------

    def on_event(self, event: object) -> list[dict[str, Any]]:
        if isinstance(event, ab.SpeechStarted):
            if self.pending or self.current is not None:
                return []
            return self._open(event.time)[1]
        if isinstance(event, ab.Transcript):
            return self._transcript(event)
        if isinstance(event, ab.Finalized):
            if not self.pending:
                return []
            item = self.pending.popleft()
            return [] if item is None else self._complete(item)
        return []

    def fail(self, code: str, message: str) -> list[dict[str, Any]]:
        """The session failed: every committed item still waiting for its text fails."""
        items = [i for i in self.pending if i is not None]
        if self.current is not None and self.current.committed:
            items.append(self.current)
        self.pending.clear()
        return [{"type": "conversation.item.input_audio_transcription.failed",
                 "event_id": event_id(), "item_id": item.id, "content_index": 0,
                 "error": {"type": "transcription_error", "code": code, "message": message,
                           "param": None}} for item in items]

    def _open(self, time: float) -> tuple[Item, list[dict[str, Any]]]:
        item = Item(new_item_id(), time)
        self.current = item
        return item, [{"type": "input_audio_buffer.speech_started", "event_id": event_id(),
                       "audio_start_ms": round(time * 1000), "item_id": item.id}]

    def _transcript(self, t: ab.Transcript) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.pending:  # belongs to the oldest commit (or clear) still being finalized
            item = self.pending[0]
            if item is None:
                return []
        else:
            if self.current is None:
                item, out = self._open(t.start)
            else:
                item = self.current
        item.end = max(item.end, t.end)
        if not t.is_final:
            visible = item.committed or self.server_vad
            delta = item.stabilizer.partial(item.text(t.text)) if visible else ""
            if delta:
                out.append(self._delta(item, delta))
            return out
        if t.text.strip():
            item.finals.append(t.text.strip())
        if self.server_vad and not item.committed:
            self.current = None
            item.committed = True
            out.append({"type": "input_audio_buffer.speech_stopped", "event_id": event_id(),
                        "audio_end_ms": round(item.end * 1000), "item_id": item.id})
            out.append(self._committed(item))
            out.extend(self._complete(item))
        return out

    def _complete(self, item: Item) -> list[dict[str, Any]]:
        delta, completed = item.stabilizer.final(item.text())
        out = [self._delta(item, delta)] if delta else []
        out.append({"type": "conversation.item.input_audio_transcription.completed",
                    "event_id": event_id(), "item_id": item.id, "content_index": 0,
                    "transcript": completed, "logprobs": None,
                    "usage": {"type": "duration",
                              "seconds": round(max(0.0, item.end - item.start), 3)}})
        return out

    def _committed(self, item: Item) -> dict[str, Any]:
        event = {"type": "input_audio_buffer.committed", "event_id": event_id(),
                 "previous_item_id": self.previous_id, "item_id": item.id}
        self.previous_id = item.id
        return event

    @staticmethod
    def _delta(item: Item, delta: str) -> dict[str, Any]:
        return {"type": "conversation.item.input_audio_transcription.delta",
                "event_id": event_id(), "item_id": item.id, "content_index": 0,
                "delta": delta, "logprobs": None}
