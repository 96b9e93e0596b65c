"""An adapter base for providers that talk HTTP: one pooled `httpx.AsyncClient` per adapter."""

from __future__ import annotations

import httpx

from adapters.base import Adapter, AdapterContext


class HttpAdapter(Adapter):
    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared client, created on first use (inside the running event loop)."""
        if self._http is None:
            self._http = httpx.AsyncClient()
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
