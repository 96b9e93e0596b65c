"""The redactor on the shapes of lines that carried secrets (issue 10, row 1), and the two
log formats. The end-to-end proof is test_log_redaction.py; these pin each rule."""

from __future__ import annotations

import io
import json
import logging

import pytest

from app.logs import Redactor, configure_logging, log_context
from config import load_settings

DG = "dg-secret-0123456789abcdef"
R = Redactor([DG, "admin-token-XYZ-987654321"])


@pytest.mark.parametrize("line, secret, kept", [
    ('127.0.0.1:5 - "GET /v1/transcribe?model=x&api_key=sg_live_abcDEF123-_x HTTP/1.1" 200',
     "abcDEF123", "model=x&api_key=***"),
    ('"WebSocket /v1/transcribe?token=sg_tok_key_00ff.SECRETPART123" [accepted]',
     "SECRETPART123", "token=***"),
    ("GET /v1/usage?KEY=plainsecret99&days=3", "plainsecret99", "&days=3"),
    ("GET /x?xi_api_key=abcdefgh123&key_id=key_0011", "abcdefgh123", "key_id=key_0011"),
    ("> Authorization: Token dg-secret-0123456789abcdef", "0123456789", "Authorization: ***"),
    ("< x-api-key: wrong-key-1234567", "wrong-key", "x-api-key: ***"),
    ("{'xi-api-key': 'abc12345678', 'x-gladia-key': 'def12345678'}", "12345678", "'***'"),
    ("(b'authorization', b'Bearer tok123456789')", "tok123456789", "b'***'"),
    ("> Sec-WebSocket-Protocol: speechgate, sg_live_QWERTY12345", "QWERTY12345",
     "Sec-WebSocket-Protocol: ***"),
    ("""< TEXT '{"type": "auth", "api_key": "notourformat123"}' [48 bytes]""",
     "notourformat123", '"api_key": "***"'),
    ('{"token": "raw-token-value-999", "key_id": "key_abc"}', "raw-token-value",
     '"key_id": "key_abc"'),
    ("upstream said: bad key dg-secret-0123456 (truncated)", "dg-secret-0123456",
     "bad key *** (truncated)"),
    ("redis://user:hunter2hunter2@localhost:6379/0", "hunter2", "redis://user:***@"),
    ("header Bearer abcdefghijkl0123 end", "abcdefghijkl0123", "Bearer *** end"),
    ("key sg_dev_abcdefghijk registered", "abcdefghijk", "sg_dev_***"),
])
def test_each_rule(line: str, secret: str, kept: str) -> None:
    masked = R(line)
    assert secret not in masked, masked
    assert kept in masked, masked
    assert R(masked) == masked  # idempotent: a second filter changes nothing


def test_ids_and_ordinary_words_are_kept() -> None:
    line = "session sess_0123 key key_0123456789abcdef model deepgram.nova-3 closed 4401"
    assert R(line) == line


def _run(fmt: str) -> list[str]:
    settings = load_settings(log_format=fmt, admin_token="admin-token-XYZ-987654321",
                             deepgram_api_key=DG)
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(settings, stream=stream)
        log = logging.getLogger("speechgate.test")
        log.info("closed with %s", f"Authorization: Token {DG}",
                 extra=log_context(session_id="sess_1", key_id="key_2", close_code=4401))
        try:
            raise ValueError(f"provider rejected admin-token-XYZ-987654321 and {DG}")
        except ValueError:
            log.exception("failed")
        log.warning("session %s: usage not recorded for %s", "sess_fedcba9876543210fedc",
                    "key_0011223344556677")
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/v1/usage?api_key=sg_live_zz9",
            "1.1", 200)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name in ("uvicorn.access", "uvicorn.error"):
            logging.getLogger(name).filters.clear()
    return stream.getvalue().splitlines()


def test_text_format_masks_messages_tracebacks_and_the_access_log() -> None:
    text = "\n".join(_run("text"))
    for secret in (DG, "0123456789", "XYZ-987654321", "zz9"):
        assert secret not in text
    assert "[session_id=sess_1 key_id=key_2 close_code=4401]" in text
    assert "Traceback" in text and "ValueError: provider rejected *** and ***" in text
    assert "GET /v1/usage?api_key=*** HTTP/1.1" in text


def test_json_format_is_one_object_per_line_with_context() -> None:
    lines = _run("json")
    entries = [json.loads(line) for line in lines]
    assert len(entries) == 4
    first, second, inferred, third = entries
    assert inferred["session_id"] == "sess_fedcba9876543210fedc"
    assert inferred["key_id"] == "key_0011223344556677" and inferred["level"] == "warning"
    assert first["level"] == "info" and first["logger"] == "speechgate.test"
    assert first["session_id"] == "sess_1" and first["key_id"] == "key_2"
    assert first["close_code"] == 4401 and "***" in first["message"]
    assert "Traceback" in second["exception"] and DG not in second["exception"]
    assert third["message"].endswith('"GET /v1/usage?api_key=*** HTTP/1.1" 200')
    assert {"time", "level", "logger", "message"} <= third.keys()
