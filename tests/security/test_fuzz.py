"""Random input against a real gateway process must never make it fail (issue 10).

Seeded: a few thousand random query strings, headers and bodies on ``POST /v1/transcribe``,
random frames (binary, JSON, deeply nested, huge integers, invalid UTF-8) on the native, xrx
and Prosa WebSockets, random JSON bodies on the token and admin APIs. No answer may be an HTTP
500 or a close 1011/1006, and the server's log may hold no traceback and no ERROR line.
"""

from __future__ import annotations

import os
import secrets

import pytest

from tests.security.fuzz import Fuzzer
from tests.security.servers import logged_gateway

pytestmark = pytest.mark.timeout(240)

SEED = int(os.environ.get("SPEECHGATE_FUZZ_SEED", "20261127"))


async def test_fuzz_never_fails_the_server() -> None:
    admin = "adm-" + secrets.token_urlsafe(16)
    env = {"SPEECHGATE_ADMIN_TOKEN": admin, "SPEECHGATE_IDLE_TIMEOUT": "3",
           "SPEECHGATE_AUTH_TIMEOUT": "1",
           # every request comes from 127.0.0.1: no brute-force block hiding later inputs
           "SPEECHGATE_FAILED_AUTH_PER_MINUTE": "0"}
    with logged_gateway(env) as gw:
        fuzzer = Fuzzer(gw.http_url, gw.ws_url, gw.dev_key, admin, SEED)
        found = await fuzzer.run(http_requests=2000, json_requests=600, ws_sessions=300)
        assert gw.process.poll() is None, "the gateway died"
    log = gw.log()
    print(f"\nfuzz seed {SEED}: {sum(found.http.values())} HTTP answers {dict(found.http)}, "
          f"{found.sessions} WebSocket sessions closed {dict(found.closes)}, "
          f"{found.seconds:.1f} s")
    assert found.problems == [], "\n".join(found.problems)
    bad_lines = [line for line in log.splitlines() if "Traceback" in line or " ERROR " in line]
    assert bad_lines == [], "\n".join(bad_lines[:20])
    assert sum(found.http.values()) >= 2000 and sum(found.closes.values()) > 0
