"""The ASGI application factory and its lifespan."""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from adapters.registry import ModelId
from app import routes
from app.frontends import native as ws_native
from app.frontends.base import WebSocketFrontends
from app.frontends.batch import transcribe_file
from app.gateway import Gateway, build_gateway
from config import Settings, load_settings

logger = logging.getLogger(__name__)

# Optional front-end modules: each exports `routes` (and may export `mount(app, gateway)`).
FRONTENDS = ("app.frontends.admin", "app.frontends.xrx", "app.frontends.prosa",
             "app.frontends.socketio")


def _frontend_modules() -> list[object]:
    modules: list[object] = []
    for name in FRONTENDS:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


def build_app(settings: Settings | None = None) -> tuple[ASGIApp, Gateway]:
    """The ASGI app and the gateway state behind it (which `GatewayServer` drains)."""
    settings = settings or load_settings()
    gateway = build_gateway(settings)
    modules = _frontend_modules()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await startup(gateway)
        try:
            yield
        finally:
            gateway.draining = True
            await gateway.registry.aclose()
            await gateway.access.aclose()

    route_list: list[BaseRoute] = [
        Route("/", routes.demo_page),
        Route("/healthz", routes.healthz),
        Route("/readyz", routes.readyz),
        Route("/metrics", routes.metrics),
        Route("/v1/models", routes.list_models),
        Route("/v1/transcribe", transcribe_file, methods=["POST"]),
    ]
    for module in modules:
        route_list.extend(getattr(module, "routes", []))
    if routes.STATIC.is_dir():
        route_list.append(Mount("/static", StaticFiles(directory=routes.STATIC), name="static"))
    starlette = Starlette(routes=route_list, lifespan=lifespan)
    starlette.state.gateway = gateway
    frontends = dict(ws_native.frontends)
    for module in modules:
        frontends.update(getattr(module, "frontends", {}))
    app: ASGIApp = WebSocketFrontends(starlette, gateway, frontends)
    for module in modules:
        mount = getattr(module, "mount", None)
        if mount is not None:
            app = mount(app, gateway)
    return app, gateway


class GatewayServer(uvicorn.Server):
    """uvicorn, draining the gateway before it closes connections on shutdown: it stops
    accepting, lets open sessions deliver their finals (`Gateway.drain`, bounded by
    ``drain_seconds``), and only then lets uvicorn close what is left with 1012."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections while draining
        await self.gateway.drain(self.gateway.settings.drain_seconds)
        await super().shutdown(sockets)


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
