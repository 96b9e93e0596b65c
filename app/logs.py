"""Logging for the gateway process: one setup, and no secret in any line at any level.

`configure_logging(settings)` (called by ``speechgate serve`` and ``python -m app``) installs a
single handler on the root logger; every logger — ours, uvicorn's access and error logs,
``websockets``, ``httpx``/``httpcore`` at debug — propagates to it, and the handler's
`RedactingFilter` rewrites each record before it is formatted:

- query values of secret-looking parameters (``api_key``, ``token``, ``key``, ``…_key``,
  ``access_token``, ``password``…) in paths and URLs: ``/v1/transcribe?api_key=***``;
- values of credential headers (``Authorization``, ``X-API-Key``, ``xi-api-key``,
  ``x-gladia-key``, ``Sec-WebSocket-Protocol``, cookies) as printed by the HTTP and WebSocket
  libraries, and of credential fields in JSON (``{"type": "auth", "api_key": "***"}``);
- anything shaped like our keys and tokens (``sg_live_…``, ``sg_tok_<key id>.…``, ``sg_dev_…``);
- every secret the settings know (provider keys, the admin token, the dev key), also when a
  line holds only a truncated part of one (any run of 8 or more of its leading characters);
- passwords in URLs (``redis://user:***@host``).

Structured logs are opt-in (``SPEECHGATE_LOG_FORMAT=json``): one JSON object per line with
``time``, ``level``, ``logger``, ``message`` and, when the caller passed them through
``extra=`` (see `log_context`), ``session_id``, ``key_id``, ``model``, ``close_code``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from config import Settings

MASK = "***"
# Fields a caller may pass via ``extra=`` (see `log_context`); shown by both formats.
CONTEXT_FIELDS = ("session_id", "key_id", "model", "frontend", "close_code", "client")
KNOWN_PREFIX = 8  # this many leading characters of a known secret are masked wherever seen

_SECRET_NAME = r"[\w.-]*(?:key|token|secret|password|passwd|auth|signature|sig|credential)[\w.-]*"
# ?api_key=..., &token=..., ;key=... (also URL-encoded names are plain ASCII here)
_QUERY = re.compile(rf"([?&;]({_SECRET_NAME})=)[^&\s\"'#;<>]*", re.IGNORECASE)
_HEADER_NAMES = (r"authorization|proxy-authorization|x-api-key|xi-api-key|x-gladia-key|api-key"
                 r"|x-admin-token|sec-websocket-protocol|cookie|set-cookie")
# "Authorization: Token dg-…" (websockets' handshake lines), "'x-api-key': '…'" (dict reprs),
# "(b'authorization', b'Bearer …')" (ASGI header tuples).
_HEADER = re.compile(
    rf"""(\b(?:{_HEADER_NAMES})['"]?\s*[:,=]\s*b?['"]?)[^'"\r\n]*""", re.IGNORECASE)
# {"api_key": "…"} / {'token': '…'} in JSON or Python reprs of client messages.
_JSON_FIELD = re.compile(rf"""(["']({_SECRET_NAME})["']\s*:\s*b?["'])[^"'\s,}}]*""",
                         re.IGNORECASE)
# Our own secrets, recognisable by their prefix (auth/credentials.py) wherever they appear.
_OUR_TOKEN = re.compile(r"\b(sg_tok_[A-Za-z0-9_]{1,64}\.)[A-Za-z0-9_\-]+")
_OUR_KEY = re.compile(r"\b(sg_(?:live|dev|test)_)[A-Za-z0-9_\-]+")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/@\s:]*:)[^/@\s]+@", re.IGNORECASE)
_SCHEME = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+")


def _mask_value(match: re.Match[str]) -> str:
    """Mask the value of a secret-named field, but not of an id (``key_id``, ``token_ids``):
    ids are what a log is for."""
    name = match.group(2).lower()
    if name.endswith(("_id", "_ids", "-id")):
        return match.group(0)
    return match.group(1) + MASK


class Redactor:
    """Masks secrets in text: the patterns above, plus the exact values it is given."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self.known = sorted({s for s in known if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = self._mask_known(text)
        text = _OUR_TOKEN.sub(rf"\g<1>{MASK}", text)
        text = _OUR_KEY.sub(rf"\g<1>{MASK}", text)
        text = _QUERY.sub(_mask_value, text)
        text = _HEADER.sub(rf"\g<1>{MASK}", text)
        text = _JSON_FIELD.sub(_mask_value, text)
        text = _SCHEME.sub(rf"\g<1> {MASK}", text)
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)

    def _mask_known(self, text: str) -> str:
        for secret in self.known:
            head = secret[:min(KNOWN_PREFIX, len(secret))]
            start = text.find(head)
            while start >= 0:
                end = start + len(head)
                while end - start < len(secret) and end < len(text) \
                        and text[end] == secret[end - start]:
                    end += 1
                text = text[:start] + MASK + text[end:]
                start = text.find(head, start + len(MASK))
        return text


_SESSION_ID = re.compile(r"\bsess_[0-9a-f]{8,32}\b")
_KEY_ID = re.compile(r"\bkey_[0-9a-f]{8,32}\b")


def infer_context(record: logging.LogRecord, message: str) -> None:
    """Lines written before `log_context` existed ("session sess_…: …", "key key_… …") get
    their session and key ids as fields too, for the structured format."""
    for name, pattern in (("session_id", _SESSION_ID), ("key_id", _KEY_ID)):
        if getattr(record, name, None) is None:
            match = pattern.search(message)
            if match:
                setattr(record, name, match.group(0))


class RedactingFilter(logging.Filter):
    """Renders each record's message (and traceback) once, masked.

    On a handler (the default) the message is rendered and the arguments dropped, so a
    secret split between the format and its arguments (``"> %s: %s", "Authorization",
    "Token …"``) is still seen whole. With ``keep_args`` (for a logger whose own formatter
    reads ``record.args``, like uvicorn's access log) each string argument is masked in place.
    """

    def __init__(self, redactor: Redactor, *, keep_args: bool = False) -> None:
        super().__init__()
        self.redact = redactor
        self.keep_args = keep_args

    def filter(self, record: logging.LogRecord) -> bool:
        if self.keep_args and isinstance(record.args, tuple):
            record.msg = self.redact(str(record.msg))
            record.args = tuple(self.redact(a) if isinstance(a, str) else a
                                for a in record.args)
        else:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad format string must not lose the line
                message = f"{record.msg!r} % {record.args!r}"
            record.msg = self.redact(message)
            record.args = None
            infer_context(record, record.msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
            record.exc_info = None  # the formatter prints exc_text as it is
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, self.redact(value))
        return True


# Lines libraries log at ERROR, with a traceback, for what a client did wrong: the client is
# told (uvicorn closes 1007), the server is fine, so they are logged at INFO without one.
CLIENT_FAULTS = ("Invalid UTF-8 sequence received from client.",)


class ClientFaultFilter(logging.Filter):
    """On a library's logger: a client's fault is not the server's error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.msg in CLIENT_FAULTS:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in CONTEXT_FIELDS
            if getattr(record, name, None) is not None}


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [session_id=… key_id=…]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib name
        line = super().formatMessage(record)
        context = _context(record)
        if context:
            line += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def known_secrets(settings: BaseModel) -> list[str]:
    """Every secret value the settings hold (provider keys, admin token, dev key), in nested
    groups too."""
    values: list[str] = []

    def walk(value: object) -> None:
        getter = getattr(value, "get_secret_value", None)
        if getter is not None:
            secret = getter()
            if isinstance(secret, str) and secret:
                values.append(secret)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    return values


def configure_logging(settings: Settings, *, stream: Any = None) -> logging.Handler:
    """Route every logger through one redacting handler on the root logger.

    Replaces handlers installed before (``basicConfig``), so call it once at start-up; give
    uvicorn ``log_config=None`` so it adds no handler of its own. Returns the handler.
    """
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        level = logging.INFO
    redactor = Redactor(known_secrets(settings))
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter(redactor))
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Loggers that may carry handlers of their own (uvicorn's default config): send their
    # lines through ours instead, so none escapes the filter.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    # Belt and braces: should uvicorn install its default handlers after all (a caller not
    # passing ``log_config=None``), its two loggers still mask before any handler sees a line.
    for name, keep_args in (("uvicorn.access", True), ("uvicorn.error", False)):
        logger = logging.getLogger(name)
        for old_filter in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
            logger.removeFilter(old_filter)
        logger.addFilter(RedactingFilter(redactor, keep_args=keep_args))
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ClientFaultFilter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(ClientFaultFilter())
    return handler


def log_context(*, session_id: str | None = None, key_id: str | None = None,
                model: str | None = None, frontend: str | None = None,
                close_code: int | None = None, client: str | None = None) -> dict[str, Any]:
    """``extra=`` for a log call: ``logger.info("closed", extra=log_context(session_id=…))``.
    Only ids — never pass a key or token here."""
    fields = {"session_id": session_id, "key_id": key_id, "model": model,
              "frontend": frontend, "close_code": close_code, "client": client}
    return {k: v for k, v in fields.items() if v is not None}


def session_context(session: Any, **more: Any) -> dict[str, Any]:
    """`log_context` for a `Session` (app.session): its id, key id and current model."""
    principal = getattr(session, "principal", None)
    return log_context(session_id=getattr(session, "id", None),
                       key_id=getattr(principal, "key_id", None),
                       model=getattr(session, "model_id", None), **more)
