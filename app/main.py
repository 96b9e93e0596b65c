"""The ASGI application factory, its route table and its lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from adapters.registry import ModelId
from app import routes
from app.frontends import admin, openai_batch, socketio
from app.frontends.base import websocket_route
from app.frontends.batch import transcribe_file
from app.frontends.deepgram_compat import DeepgramConnection
from app.frontends.native import NativeConnection
from app.frontends.openai_realtime import RealtimeConnection
from app.frontends.prosa import ProsaConnection
from app.frontends.xrx import XrxConnection
from app.gateway import Gateway, build_gateway
from app.server import GatewayServer
from config import Settings, load_settings

__all__ = ["GatewayServer", "build_app", "route_table", "startup"]

logger = logging.getLogger(__name__)


def route_table(gateway: Gateway) -> list[BaseRoute]:
    """Every endpoint of the gateway (shared/API.md), in one table."""
    sio = socketio.asgi_app(gateway)
    table: list[BaseRoute] = [
        # HTTP: catalogue, health, metrics, the demo page
        Route("/", routes.demo_page),
        Route("/healthz", routes.healthz),
        Route("/readyz", routes.readyz),
        Route("/metrics", routes.metrics),
        Route("/v1/models", routes.list_models),
        # Transcription: native streaming (§1), batch (§2), compatible protocols (§5)
        websocket_route("/v1/transcribe", NativeConnection),
        Route("/v1/transcribe", transcribe_file, methods=["POST"]),
        websocket_route("/api/v1/ws", XrxConnection),
        websocket_route("/v2/speech/stt", ProsaConnection),
        websocket_route("/v1/listen", DeepgramConnection),  # Deepgram SDKs
        websocket_route("/v1/realtime", RealtimeConnection),  # OpenAI Realtime transcription
        Route("/v1/audio/transcriptions", openai_batch.transcriptions, methods=["POST"]),
        Mount("/" + socketio.SOCKETIO_PATH, app=sio),
        Route("/" + socketio.SOCKETIO_PATH, sio),  # clients with addTrailingSlash: false
        WebSocketRoute("/" + socketio.SOCKETIO_PATH, sio),
        # Keys, tokens and usage (§3)
        Route("/v1/admin/keys", admin.keys_collection, methods=["GET", "POST"]),
        Route("/v1/admin/keys/{key_id}", admin.key_item, methods=["GET", "PATCH", "DELETE"]),
        Route("/v1/admin/keys/{key_id}/rotate", admin.key_rotate, methods=["POST"]),
        Route("/v1/auth/tokens", admin.mint_token, methods=["POST"]),
        Route("/v1/usage", admin.usage, methods=["GET"]),
    ]
    if routes.STATIC.is_dir():
        table.append(Mount("/static", StaticFiles(directory=routes.STATIC), name="static"))
    return table


def build_app(settings: Settings | None = None) -> tuple[ASGIApp, Gateway]:
    """The ASGI app and the gateway state behind it (which `GatewayServer` drains)."""
    settings = settings or load_settings()
    gateway = build_gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await startup(gateway)
        try:
            yield
        finally:
            gateway.draining = True
            await gateway.registry.aclose()
            await gateway.access.aclose()

    app = Starlette(routes=route_table(gateway), lifespan=lifespan)
    app.state.gateway = gateway
    return app, gateway


async def startup(gateway: Gateway) -> None:
    settings = gateway.settings
    await gateway.access.start()
    if settings.dev_key is not None:
        await gateway.access.ensure_key(settings.dev_key.get_secret_value(), "dev")
    # Load the default local model now, so the first session does not wait for it.
    try:
        model = ModelId.parse(settings.default_model)
        adapter = gateway.registry.adapter(model.provider)
        warmup = getattr(adapter, "warmup", None)
        if warmup is not None:
            await warmup(model.name)
    except Exception as exc:  # noqa: BLE001 - sessions for this model will report the cause
        logger.warning("default model %s is not ready: %s", settings.default_model, exc)
