"""A gateway on the local engine and on the Deepgram and OpenAI fakes, for the SDK tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.fakes.providers import Upstream, upstream
from tests.servers import Gateway, running_gateway


@pytest.fixture(scope="package")
async def fakes() -> AsyncIterator[dict[str, Upstream]]:
    async with contextlib.AsyncExitStack() as stack:
        yield {p: await stack.enter_async_context(upstream(p)) for p in ("deepgram", "openai")}


@pytest.fixture(scope="package")
def compat_gateway(fakes: dict[str, Upstream]) -> Iterator[Gateway]:
    settings: dict[str, Any] = {"provider_connect_timeout": 5.0, "provider_flush_timeout": 5.0,
                                "idle_timeout": 5.0}
    for up in fakes.values():
        settings.update(up.settings())
    with running_gateway(**settings) as gw:
        yield gw


def server_state(gw: Gateway) -> Any:
    """The gateway state behind the served app (sessions still open, metrics)."""
    app = gw.app
    while not hasattr(app, "gateway"):
        app = app.other_asgi_app
    return app.gateway
