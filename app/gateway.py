"""The gateway's shared state, built once by the app factory: `request.app.state.gateway`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adapters._tasks import cancel_and_wait
from adapters.base import AdapterContext
from adapters.registry import Registry
from app.metrics import Metrics
from auth import GatewayAccessControl
from auth.base import Principal
from config import Settings

if TYPE_CHECKING:
    from app.session import Session

logger = logging.getLogger(__name__)


@dataclass
class Gateway:
    settings: Settings
    registry: Registry
    access: GatewayAccessControl
    metrics: Metrics = field(default_factory=Metrics)
    sessions: set[Session] = field(default_factory=set)
    draining: bool = False

    async def authenticate(self, secret: str | None, client: str | None) -> Principal:
        """Resolve a key or token; raises `GatewayError` (4401, 4429, 4503)."""
        from app.errors import to_gateway_error

        try:
            return await self.access.authenticate(secret, client=client)
        except Exception as exc:
            raise to_gateway_error(exc) from None

    async def drain(self, seconds: float) -> None:
        """Server shutdown: refuse new sessions, and give every open one up to `seconds` to
        flush its provider and deliver the finals of the audio it received; each then closes
        1012 (restarting, reconnect). Sessions still open after `seconds` are left to the
        server's own 1012."""
        self.draining = True
        sessions = list(self.sessions)
        self.metrics.drain_started(len(sessions))
        if not sessions:
            return
        logger.info("draining %d session(s) for up to %g s", len(sessions), seconds)
        tasks = [asyncio.create_task(s.drain(), name=f"{s.id}:drain") for s in sessions]
        for task in tasks:
            task.add_done_callback(
                lambda _: self.metrics.drain_progress(sum(not t.done() for t in tasks)))
        try:
            await asyncio.wait(tasks, timeout=seconds)
        finally:
            await cancel_and_wait(tasks)


def adapter_contexts(settings: Settings) -> dict[str, AdapterContext]:
    """Each adapter gets only its own settings: its group of `Settings`, whole and typed."""
    connect, flush = settings.provider_connect_timeout, settings.provider_flush_timeout
    stall = settings.provider_stall_timeout
    contexts = {"local": AdapterContext(local=settings.local, connect_timeout=connect,
                                        flush_timeout=flush)}
    for name, provider in settings.providers.items():
        contexts[name] = AdapterContext(api_key=provider.secret(), base_url=provider.base_url,
                                        connect_timeout=connect, flush_timeout=flush,
                                        stall_timeout=stall)
    contexts["groq"] = dataclasses.replace(contexts["groq"], merge_wait=settings.groq_merge_wait)
    return contexts


def build_gateway(settings: Settings) -> Gateway:
    from auth import build_access_control

    return Gateway(settings=settings, registry=Registry(adapter_contexts(settings)),
                   access=build_access_control(settings))
