"""One way to stand up any provider's fake with an adapter pointed at it.

Used by the contract suite, the error-mapping test, the end-to-end tests and the relay
benchmark: ``async with upstream("deepgram", fault="drop") as up: up.adapter.open_stream(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.base import Adapter, AdapterContext, ProviderError, StreamOptions
from tests.fakes.driver import run
from tests.fakes.proxy import FaultProxy
from tests.speech import pcm

# provider -> (default model, PCM rate of that model)
CLOUD: dict[str, tuple[str, int]] = {
    "deepgram": ("nova-3", 16000),
    "assemblyai": ("universal-streaming-english", 16000),
    "openai": ("gpt-4o-transcribe", 24000),
    "gladia": ("solaria-1", 16000),
    "groq": ("whisper-large-v3-turbo", 16000),
    "soniox": ("stt-rt-v4", 16000),
    "elevenlabs": ("scribe_v2_realtime", 16000),
}
KEYS = {"deepgram": "dg-test-key", "assemblyai": "aai-test-key", "openai": "sk-test-key",
        "gladia": "gladia-test-key", "groq": "gsk_test_key", "soniox": "soniox-test-key",
        "elevenlabs": "xi-test-key"}


@dataclass
class Upstream:
    provider: str
    model: str
    rate: int
    fake: Any
    base_url: str
    api_key: str
    adapter: Adapter
    proxy: FaultProxy | None = None

    def settings(self) -> dict[str, Any]:
        """Gateway settings overrides that point this provider at the fake."""
        return {f"{self.provider}_api_key": self.api_key,
                f"{self.provider}_base_url": self.base_url}

    async def sessions_closed(self) -> None:
        """Wait until the fake holds no upstream session open (bound it with a timeout)."""
        for log in list(getattr(self.fake, "sessions", None) or []):
            await log.closed.wait()

    def open_sessions(self) -> int:
        """Upstream sessions the fake still holds open (WebSocket providers)."""
        sessions = getattr(self.fake, "sessions", None) or []
        return sum(not log.closed.is_set() for log in sessions)


def make_fake(provider: str, **kw: Any) -> tuple[Any, Any]:
    """The fake for `provider` and a function giving its base URL once started."""
    if provider == "deepgram":
        from tests.fakes.deepgram_flux import FakeDeepgramFlux  # v1 and Flux (/v2/listen)

        return FakeDeepgramFlux(**kw), lambda f: f.url
    if provider == "assemblyai":
        from tests.fakes.assemblyai import FakeAssemblyAI

        return FakeAssemblyAI(**kw), lambda f: f.url
    if provider == "openai":
        from tests.fakes.openai import FakeOpenAI

        return FakeOpenAI(**kw), lambda f: f.base_url
    if provider == "gladia":
        from tests.fakes.gladia import FakeGladia

        return FakeGladia(**kw), lambda f: f.http_url
    if provider == "groq":
        from tests.fakes.groq import FakeGroq

        return FakeGroq(**kw), lambda f: f.base_url
    if provider == "soniox":
        from tests.fakes.soniox import FakeSoniox

        return FakeSoniox(**kw), lambda f: f.url
    if provider == "elevenlabs":
        from tests.fakes.elevenlabs import FakeElevenLabs

        return FakeElevenLabs(**kw), lambda f: f.http_url
    raise ValueError(provider)


def adapter_class(provider: str) -> type[Adapter]:
    import importlib

    from adapters.registry import PROVIDERS

    module, _, name = PROVIDERS[provider].partition(":")
    cls: type[Adapter] = getattr(importlib.import_module(module), name)
    return cls


@contextlib.asynccontextmanager
async def upstream(provider: str, *, api_key: str | None = None, model: str | None = None,
                   connect_timeout: float = 5.0, flush_timeout: float = 5.0,
                   stall_timeout: float | None = None, proxy: bool = False,
                   keepalive_interval: float | None = None,
                   **fake_kw: Any) -> AsyncIterator[Upstream]:
    """Start `provider`'s fake and build its adapter (with `api_key`, default: the right one).

    `proxy`: the adapter reaches the fake through a `FaultProxy` (``up.proxy``), so a test
    can stall or drop the network between them."""
    default_model, rate = CLOUD[provider]
    fake, base = make_fake(provider, **fake_kw)
    async with fake, contextlib.AsyncExitStack() as stack:
        url = base(fake)
        faults = None
        if proxy:
            faults = await stack.enter_async_context(FaultProxy(fake.port))
            url = url.replace(f":{fake.port}", f":{faults.port}")
            if hasattr(fake, "public_port"):
                fake.public_port = faults.port
        key = KEYS[provider] if api_key is None else api_key
        context = AdapterContext(api_key=key, base_url=url,
                                 connect_timeout=connect_timeout, flush_timeout=flush_timeout,
                                 stall_timeout=stall_timeout,
                                 keepalive_interval=keepalive_interval)
        adapter = adapter_class(provider)(context)
        model = model or default_model
        rate = adapter.capabilities(model).input_sample_rate
        try:
            yield Upstream(provider, model, rate, fake, url, KEYS[provider], adapter, faults)
        finally:
            await adapter.aclose()


async def stream_through(provider: str, fault: str, *, seconds: float = 5.0,
                         flush_timeout: float = 1.5, **kw: Any) -> ProviderError:
    """Stream the first `seconds` of speech through `provider`'s fake with `fault` injected:
    the error that ended the stream, once the fake holds no session open any more."""
    async with upstream(provider, fault=fault, flush_timeout=flush_timeout, **kw) as up:
        audio = pcm("beckett.wav", up.rate)[: int(seconds * up.rate) * 2]
        stream = up.adapter.open_stream(up.model, StreamOptions(sample_rate=up.rate))
        with pytest.raises(ProviderError) as err:
            await run(stream, audio, rate=up.rate, within=30)
        async with asyncio.timeout(5):
            await up.sessions_closed()  # a failed stream leaves nothing open upstream
    return err.value
