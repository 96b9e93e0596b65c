"""``speechgate keys …`` and ``speechgate usage`` against a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import redis as redis_sync

from auth import credentials
from tests.servers import ROOT, RedisServer

CLI_DB = 4


def speechgate(redis: RedisServer | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHGATE_")}
    if redis is not None:
        env["SPEECHGATE_REDIS_URL"] = f"redis://127.0.0.1:{redis.port}/{CLI_DB}"
    return subprocess.run(
        [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_key_lifecycle_from_the_cli(redis: RedisServer) -> None:
    with redis_sync.Redis(port=redis.port, db=CLI_DB) as client:
        client.flushdb()
    created = speechgate(redis, "keys", "create", "ci-bot", "--allowed-models", "local.*",
                         "--max-concurrent-streams", "2", "--audio-seconds-per-day", "90.5",
                         "--expires-at", "+3600", "--json")
    assert created.returncode == 0, created.stderr
    out = json.loads(created.stdout)
    secret, key = out["secret"], out["key"]
    assert secret.startswith(credentials.KEY_PREFIX)
    assert key["allowed_models"] == ["local.*"] and key["max_concurrent_streams"] == 2
    assert key["audio_seconds_per_day"] == 90.5 and key["expires_at"] > 0

    listed = speechgate(redis, "keys", "list")
    assert listed.returncode == 0 and key["id"] in listed.stdout and "active" in listed.stdout
    assert secret not in listed.stdout

    updated = speechgate(redis, "keys", "update", key["id"], "--sessions-per-minute", "10",
                         "--max-concurrent-streams", "default", "--expires-at", "never",
                         "--json")
    view = json.loads(updated.stdout)
    assert (view["sessions_per_minute"], view["max_concurrent_streams"],
            view["expires_at"]) == (10, None, None)
    shown = speechgate(redis, "keys", "show", key["id"])
    assert "sessions_per_minute: 10" in shown.stdout and secret not in shown.stdout

    rotated = speechgate(redis, "keys", "rotate", key["id"], "--json")
    new_secret = json.loads(rotated.stdout)["secret"]
    assert new_secret != secret and new_secret.startswith(credentials.KEY_PREFIX)

    usage = speechgate(redis, "usage", key["id"])
    assert usage.returncode == 0 and "total" in usage.stdout

    revoked = speechgate(redis, "keys", "revoke", key["id"], "--json")
    assert json.loads(revoked.stdout)["revoked"] is True
    assert "revoked" in speechgate(redis, "keys", "list").stdout

    missing = speechgate(redis, "keys", "show", "key_nope")
    assert missing.returncode == 1 and "no key with id key_nope" in missing.stderr
    bad = speechgate(redis, "keys", "update", key["id"], "--sessions-per-minute", "1.5")
    assert bad.returncode == 2 and "sessions_per_minute" in bad.stderr


def test_cli_needs_redis() -> None:
    result = speechgate(None, "keys", "list")
    assert result.returncode == 2 and "SPEECHGATE_REDIS_URL" in result.stderr
