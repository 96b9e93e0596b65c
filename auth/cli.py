"""``speechgate keys …`` and ``speechgate usage``: manage keys straight in the shared store.

The CLI talks to Redis at ``SPEECHGATE_REDIS_URL`` (keys of the in-memory backend live only
inside one gateway process: use the admin API for those). ``keys create`` and ``keys rotate``
print the secret once; it cannot be shown again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from auth.backend import Backend, StoreUnavailable
from auth.store import KEY_FIELDS, KeyNotFound, KeyStore

if TYPE_CHECKING:
    from config import Settings

Handler = Callable[[argparse.Namespace, KeyStore], Awaitable[int]]


def _limit(text: str) -> int | float | None:
    """A limit value: a number (0 = unlimited) or ``default`` (the server default)."""
    if text.lower() == "default":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'default': {text!r}") from None
    return int(value) if value.is_integer() else value


def _when(text: str) -> float | None:
    """Expiry: ``never``, a Unix time, an ISO date/time (UTC if no zone), or ``+<seconds>``."""
    if text.lower() == "never":
        return None
    if text.startswith("+"):
        return time.time() + float(text[1:])
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _globs(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allowed-models", type=_globs, metavar="GLOBS",
                        help="comma-separated model globs, e.g. 'local.*,deepgram.nova-3'")
    parser.add_argument("--allowed-origins", type=_globs, metavar="ORIGINS",
                        help="comma-separated browser origins, e.g. 'https://app.example.com'")
    parser.add_argument("--expires-at", type=_when, metavar="WHEN", default=argparse.SUPPRESS,
                        help="'never', Unix time, ISO time, or '+SECONDS' from now")
    for name in ("max-concurrent-streams", "sessions-per-minute", "audio-seconds-per-day",
                 "audio-seconds-per-month"):
        parser.add_argument(f"--{name}", type=_limit, metavar="N", default=argparse.SUPPRESS,
                            help="0 = unlimited, 'default' = the server default")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {name: getattr(args, name) for name in KEY_FIELDS
              if name != "name" and hasattr(args, name)}
    return {k: v for k, v in fields.items()
            if v is not None or k not in ("allowed_models", "allowed_origins")}


def _print_key(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(view, indent=2))
        return
    for name, value in view.items():
        if name in ("created_at", "expires_at") and value is not None:
            value = datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
        print(f"{name:>24}: {value}")


async def _create(args: argparse.Namespace, store: KeyStore) -> int:
    record, secret = await store.create(args.name, **_fields(args))
    if args.json:
        print(json.dumps({"key": record.public(), "secret": secret}, indent=2))
    else:
        _print_key(record.public(), False)
        print(f"\n  secret (shown once, store it now): {secret}")
    return 0


async def _list(args: argparse.Namespace, store: KeyStore) -> int:
    records = await store.list()
    if args.json:
        print(json.dumps([r.public() for r in records], indent=2))
        return 0
    print(f"{'ID':<22} {'NAME':<24} {'STATE':<8} CREATED")
    for r in records:
        state = "revoked" if r.revoked else (
            "expired" if r.expires_at is not None and r.expires_at <= time.time() else "active")
        created = datetime.fromtimestamp(r.created_at, UTC).isoformat(timespec="seconds")
        print(f"{r.id:<22} {r.name[:24]:<24} {state:<8} {created}")
    return 0


async def _show(args: argparse.Namespace, store: KeyStore) -> int:
    _print_key((await store.require(args.key_id)).public(), args.json)
    return 0


async def _update(args: argparse.Namespace, store: KeyStore) -> int:
    fields = _fields(args)
    if args.name:
        fields["name"] = args.name
    if not fields:
        print("nothing to update: give at least one option", file=sys.stderr)
        return 2
    _print_key((await store.update(args.key_id, **fields)).public(), args.json)
    return 0


async def _revoke(args: argparse.Namespace, store: KeyStore) -> int:
    _print_key((await store.revoke(args.key_id)).public(), args.json)
    return 0


async def _rotate(args: argparse.Namespace, store: KeyStore) -> int:
    record, secret = await store.rotate(args.key_id)
    if args.json:
        print(json.dumps({"key": record.public(), "secret": secret}, indent=2))
    else:
        print(f"key {record.id} rotated; the old secret and its tokens no longer work")
        print(f"  new secret (shown once, store it now): {secret}")
    return 0


async def _usage(args: argparse.Namespace, store: KeyStore) -> int:
    await store.require(args.key_id)
    report = await store.usage(args.key_id, args.days)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'DATE':<12} {'MODEL':<40} {'AUDIO S':>10} {'SESSIONS':>9}")
    for day in report["days"]:
        for model, entry in sorted(day["models"].items()):
            print(f"{day['date']:<12} {model:<40} {entry['audio_seconds']:>10.1f} "
                  f"{int(entry['sessions']):>9}")
    total = report["total"]
    print(f"{'total':<12} {'':<40} {total['audio_seconds']:>10.1f} {total['sessions']:>9}")
    print(f"this month ({report['month']['month']}): {report['month']['audio_seconds']:.1f} s")
    return 0


def _runner(handler: Handler) -> Callable[[argparse.Namespace, Settings], Awaitable[int]]:
    async def run(args: argparse.Namespace, settings: Settings) -> int:
        if not settings.redis_url:
            print("SPEECHGATE_REDIS_URL is not set: without Redis, keys live inside one "
                  "gateway process; use the admin API (/v1/admin/keys) instead.",
                  file=sys.stderr)
            return 2
        from auth.redis_store import RedisBackend

        backend: Backend = RedisBackend(settings.redis_url, connect_attempts=3)
        try:
            await backend.start()
            return await handler(args, KeyStore(backend))
        except StoreUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyNotFound as exc:
            print(f"error: no key with id {exc.args[0]}", file=sys.stderr)
            return 1
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            await backend.aclose()
    return run


def register(subparsers: Any) -> None:
    """Add ``keys`` and ``usage`` to the ``speechgate`` CLI (handlers: ``(args, settings)``)."""
    keys = subparsers.add_parser("keys", help="manage API keys (in Redis)")
    sub = keys.add_subparsers(dest="keys_command", required=True)

    def command(name: str, handler: Handler, help_text: str, *, key_id: bool = True,
                options: bool = False) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        if key_id:
            parser.add_argument("key_id")
        if options:
            _add_key_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(func=_runner(handler))
        return parser

    create = command("create", _create, "create a key and print its secret once",
                     key_id=False, options=True)
    create.add_argument("name")
    command("list", _list, "list keys", key_id=False)
    command("show", _show, "show one key")
    update = command("update", _update, "change a key's name, rights or limits", options=True)
    update.add_argument("--name")
    command("revoke", _revoke, "revoke a key and its tokens")
    command("rotate", _rotate, "give a key a new secret (the old one stops working)")

    usage = subparsers.add_parser("usage", help="audio seconds by day and model for a key")
    usage.add_argument("key_id")
    usage.add_argument("--days", type=int, default=30)
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(func=_runner(_usage))
