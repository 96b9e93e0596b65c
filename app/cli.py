"""The ``speechgate`` command: serve, transcribe, models, keys, usage."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
from typing import Any

from app.logs import configure_logging
from config import Settings, load_settings

logger = logging.getLogger("speechgate")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from app.main import build_app
    from app.server import GatewayServer, build_config

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    dev_key = settings.dev_key.get_secret_value() if settings.dev_key else None
    dev_key_generated = dev_key is None and not settings.redis_url
    if dev_key_generated:
        dev_key = "sg_dev_" + secrets.token_urlsafe(24)
    if dev_key is not None:
        overrides["dev_key"] = dev_key
    settings = load_settings(**overrides)
    from app.workers import WorkersRefused, resolve_workers, serve_workers

    try:
        workers = resolve_workers(args.workers, settings)
    except WorkersRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)  # one redacting handler for every logger (app/logs.py)
    url = f"ws://{settings.host}:{settings.port}"
    print(f"Speechgate on http://{settings.host}:{settings.port}  (demo page at /)", flush=True)
    print(f"  model: {settings.default_model}   key store: "
          f"{'redis ' + settings.redis_url if settings.redis_url else 'in-memory'}", flush=True)
    if dev_key is not None:
        # A generated key is shown once so it can be used; one the operator set is not echoed.
        shown = dev_key if dev_key_generated else "$SPEECHGATE_DEV_KEY"
        print(f"  dev key: {shown}", flush=True)
        print("  try it:  .venv/bin/speechgate transcribe YOUR_FILE.wav "
              f"--url {url} --key {shown}", flush=True)
    if workers > 1:
        print(f"  workers: {workers} processes on port {settings.port}", flush=True)
        return serve_workers(settings, workers)
    app, gateway = build_app(settings)
    config = build_config(app, settings, log_config=None)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after shutdown
        GatewayServer(config, gateway).run()
    return 0


async def _transcribe(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from app.client import SpeechgateClient, SpeechgateError
    from app.resume import ReconnectPolicy

    if not os.path.exists(args.file):  # noqa: ASYNC240 - one stat before streaming
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return 2
    err = Console(stderr=True)
    # A gateway restarting (1012) or a dropped connection: resume, replaying since the last final.
    policy = ReconnectPolicy(attempts=args.reconnect_attempts) if args.reconnect_attempts else None
    client = SpeechgateClient(args.url, args.key, reconnect=policy)
    show_live = err.is_terminal and not args.quiet
    fmt = args.format
    # Partials are shown live on a terminal; ask for them even if the output format has none.
    wire_format = "verbose_json" if show_live and fmt == "text" else fmt
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.fields[clock]}"),
                        TimeRemainingColumn(), TextColumn("[dim]{task.fields[partial]}"),
                        console=err, disable=not show_live, transient=True)
    task = progress.add_task("streaming", total=None, partial="", clock="")
    total: list[float] = []

    def on_duration(duration: float | None) -> None:
        if duration:
            total.append(duration)
            progress.update(task, total=duration)

    def on_reconnect(event: dict[str, Any]) -> None:
        progress.console.print(f"gateway closed {event['code']} ({event['reason']}); "
                               f"resumed at {event['resumed_at']:.1f} s", style="dim",
                               markup=False, highlight=False)

    def on_sent(seconds: float) -> None:
        clock = f"{seconds:.1f}/{total[0]:.1f} s" if total else f"{seconds:.1f} s"
        progress.update(task, completed=seconds, clock=clock)

    params = {"model": args.model, "language": args.language, "output_format": wire_format,
              "interim_results": show_live or None, "diarization": args.diarization or None}
    try:
        events = client.transcribe_file(args.file, realtime=args.realtime, on_sent=on_sent,
                                        duration_hint=on_duration,
                                        on_reconnect=on_reconnect, **params)
        async with contextlib.aclosing(events):
            with progress:
                async for event in events:
                    if event.get("type") == "reconnected" and fmt != "verbose_json":
                        continue
                    line = _render(event, fmt, wire_format)
                    if event.get("type") == "transcript" and not event.get("is_final"):
                        progress.update(task, partial=event.get("text", "")[-60:])
                        if fmt != "verbose_json":
                            continue
                    if line is None:
                        continue
                    if show_live:
                        progress.console.print(line, markup=False, highlight=False,
                                               soft_wrap=True)
                    else:
                        print(line, flush=True)
                    progress.update(task, partial="")
    except SpeechgateError as exc:
        print(f"error: gateway closed the stream with {exc.code}: {exc.reason}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # our stdout went away (e.g. `| head`), not the gateway
    except OSError as exc:
        print(f"error: cannot reach the gateway at {args.url}: {exc}", file=sys.stderr)
        return 1
    return 0


def _render(event: dict[str, Any], fmt: str, wire_format: str) -> str | None:
    if fmt == "text":
        if wire_format == "text":
            return str(event["text"])
        if event.get("type") == "transcript" and event.get("is_final"):
            return str(event["text"])
        return None
    if fmt == "json" and "is_final" in event and not event["is_final"]:
        return None
    return json.dumps(event, ensure_ascii=False)


async def _models(args: argparse.Namespace, settings: Settings) -> int:
    from app.client import SpeechgateClient

    try:
        models = await SpeechgateClient(args.url).models()
    except Exception as exc:  # noqa: BLE001 - reported to the user
        print(f"error: cannot list models from {args.url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    for m in models:
        state = "available" if m["available"] else f"unavailable: {m.get('unavailable_reason')}"
        print(f"{m['id']:<45} {'stream' if m['streamable'] else 'batch ':<7} {state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    workers = os.environ.get("SPEECHGATE_WORKERS")
    serve.add_argument("--workers", type=int, metavar="N",
                       default=int(workers) if workers and workers.isdigit() else None,
                       help="gateway processes on this port (default: $SPEECHGATE_WORKERS, "
                            "else one per core when SPEECHGATE_REDIS_URL is set, else 1; "
                            "more than 1 needs Redis)")
    serve.set_defaults(func=_serve)

    default_url = os.environ.get("SPEECHGATE_URL", "ws://127.0.0.1:8000")
    tr = sub.add_parser("transcribe", help="stream an audio file and print the transcript")
    tr.add_argument("file")
    tr.add_argument("--url", default=default_url)
    tr.add_argument("--key", default=os.environ.get("SPEECHGATE_API_KEY"))
    tr.add_argument("--model")
    tr.add_argument("--language")
    tr.add_argument("--format", default="text", choices=["text", "json", "verbose_json"])
    tr.add_argument("--realtime", action="store_true", help="pace the audio in real time")
    tr.add_argument("--diarization", action="store_true")
    tr.add_argument("--quiet", action="store_true", help="no progress bar or live partials")
    tr.add_argument("--reconnect-attempts", type=int, default=5, metavar="N",
                    help="reconnect up to N times in a row when the gateway restarts or the "
                         "connection drops, replaying the audio since the last final (0: never)")
    tr.set_defaults(func=_transcribe)

    models = sub.add_parser("models", help="list the gateway's models")
    models.add_argument("--url", default=default_url)
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=_models)

    try:
        from auth import cli as auth_cli
    except ModuleNotFoundError as exc:
        if exc.name != "auth.cli":
            raise
    else:
        auth_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    try:
        result = args.func(args, settings)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except BrokenPipeError:
        # The reader of our output left (`speechgate models | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(result or 0)
