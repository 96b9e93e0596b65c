"""JSON from clients, parsed within bounds: every failure is a `BadJson` naming the cause.

`json.loads` alone raises more than `JSONDecodeError`: deep nesting raises `RecursionError`,
an integer of over 4,300 digits raises a plain `ValueError`. Every text frame and HTTP body a
client sends goes through `loads_bounded`, so a front-end maps exactly one exception to its
4400 / 400.
"""

from __future__ import annotations

import json
from typing import Any

MAX_JSON_BYTES = 64 * 1024  # a control message or small HTTP body
MAX_JSON_DEPTH = 32


# Compact JSON for what the gateway sends (one encoder built once: `json.dumps` with options
# builds a new one per call, and this runs for every event a client receives).
dumps_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class BadJson(ValueError):
    """The client's JSON is malformed or over a limit; the message names which."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays/objects in `text`, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads_bounded(data: str | bytes, *, max_bytes: int = MAX_JSON_BYTES,
                  max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse `data`; raises `BadJson` for anything a client could get wrong."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "replace"))
    if size > max_bytes:
        raise BadJson(f"JSON of {size} bytes is over the limit of {max_bytes} bytes")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadJson(f"JSON is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = data
    if nesting_depth(text) > max_depth:
        raise BadJson(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadJson(f"invalid JSON: {exc.msg} at char {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer over 4,300 digits
        raise BadJson(f"invalid JSON: {exc}") from None
