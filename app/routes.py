"""Plain HTTP routes: catalogue, health, metrics, the demo page."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from app.gateway import Gateway

STATIC = Path(__file__).parent / "static"


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def list_models(request: Request) -> JSONResponse:
    models = [info.to_json() for info in _gateway(request).registry.catalogue()]
    return JSONResponse({"models": models, "default": _gateway(request).settings.default_model})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    gateway = _gateway(request)
    if gateway.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if not await gateway.access.ready():
        return JSONResponse({"status": "key store unreachable"}, status_code=503)
    return JSONResponse({"status": "ready", "sessions": len(gateway.sessions)})


async def metrics(request: Request) -> Response:
    return PlainTextResponse(_gateway(request).metrics.render(),
                             media_type="text/plain; version=0.0.4")


async def demo_page(request: Request) -> Response:
    index = STATIC / "index.html"
    if not index.exists():
        return PlainTextResponse("Speechgate is running. The demo page is not installed.")
    return FileResponse(index, media_type="text/html")
