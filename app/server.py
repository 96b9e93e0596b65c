"""The uvicorn server the gateway runs in: one place that builds its configuration.

`build_config` is used by ``speechgate serve`` and by the tests' servers alike, so every
connection limit (`app.protocols`) and proxy setting holds wherever the gateway is served.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from app.gateway import Gateway
from app.protocols import (
    ConnectionLimits,
    GatewayHttpProtocol,
    GatewayWebSocketProtocol,
    allow_long_websocket_urls,
)
from config import Settings


class GatewayConfig(uvicorn.Config):
    """uvicorn's configuration plus the limits our protocols read (`app.protocols`)."""

    def __init__(self, app: ASGIApp, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


def build_config(app: ASGIApp, settings: Settings, **overrides: Any) -> GatewayConfig:
    """The uvicorn configuration for `settings`; keyword arguments override uvicorn options
    (``log_level``, ``lifespan``, ``log_config``...)."""
    limits = ConnectionLimits(handshake_timeout=settings.handshake_timeout,
                              max_url_bytes=settings.max_url_bytes,
                              max_header_bytes=settings.max_header_bytes,
                              max_frame_bytes=settings.max_frame_bytes)
    allow_long_websocket_urls(limits.max_url_bytes)
    trusted = settings.forwarded_allow_ips.strip()
    options: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_level": settings.log_level,
        "http": GatewayHttpProtocol, "ws": GatewayWebSocketProtocol,
        # The hard limit on the wire; the exact (decompressed) limit is in the protocol.
        "ws_max_size": limits.wire_frame_bytes,
        "ws_ping_interval": settings.ws_ping_interval,
        "ws_ping_timeout": settings.ws_ping_timeout,
        # X-Forwarded-For is trusted only from the proxies the operator names (none by default:
        # uvicorn's own default trusts 127.0.0.1, i.e. any local client could pick its address).
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or "",
        "timeout_graceful_shutdown": int(settings.drain_seconds),
    }
    options.update(overrides)
    return GatewayConfig(app, limits=limits, **options)


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
