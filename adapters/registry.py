"""Maps ``provider.model`` ids to adapters and builds the ``GET /v1/models`` catalogue.

Provider modules are imported lazily, so a gateway without an optional SDK still serves
every other provider.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

from adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    ModelInfo,
    ModelNotFound,
    ProviderNotConfigured,
)

logger = logging.getLogger(__name__)

# provider name -> "module:Class"
PROVIDERS: dict[str, str] = {
    "local": "adapters.local.adapter:LocalAdapter",
    "deepgram": "adapters.deepgram:DeepgramAdapter",
    "assemblyai": "adapters.assemblyai:AssemblyAIAdapter",
    "openai": "adapters.openai:OpenAIAdapter",
    "gladia": "adapters.gladia:GladiaAdapter",
    "groq": "adapters.groq:GroqAdapter",
    "soniox": "adapters.soniox:SonioxAdapter",
    "elevenlabs": "adapters.elevenlabs:ElevenLabsAdapter",
}


@dataclass(frozen=True, slots=True)
class ModelId:
    """A model id, ``provider.name`` (``"deepgram.nova-3"``, ``"local.tiny.en"``): parsed once
    at the edge, then passed around whole. ``str(model_id)`` gives the text back."""

    provider: str
    name: str

    @classmethod
    def parse(cls, text: str | ModelId) -> ModelId:
        """Raises `ModelNotFound` (a 4404; parameter checks turn it into a 4400) naming the
        text when it is not ``provider.name``."""
        if isinstance(text, ModelId):
            return text
        provider, sep, name = text.strip().partition(".")
        if not sep or not provider or not name:
            raise ModelNotFound(f"model must look like provider.model (e.g. local.tiny.en), "
                                f"got {text[:40]!r}")
        return cls(provider, name)

    def __str__(self) -> str:
        return f"{self.provider}.{self.name}"


class Registry:
    def __init__(self, contexts: dict[str, AdapterContext]) -> None:
        self._contexts = contexts
        self._adapters: dict[str, Adapter] = {}

    def providers(self) -> list[str]:
        return [name for name in PROVIDERS if self._load(name) is not None]

    def adapter(self, provider: str) -> Adapter:
        adapter = self._load(provider)
        if adapter is None:
            raise ModelNotFound(f"unknown provider {provider!r} (known: {', '.join(PROVIDERS)})")
        return adapter

    def register(self, adapter: Adapter) -> None:
        """Serve `adapter` for its provider name (tests plug scripted adapters in this way)."""
        self._adapters[adapter.provider] = adapter

    def resolve(self, model_id: str | ModelId) -> tuple[Adapter, str, Capabilities]:
        """Find the adapter and capabilities of a model; raises if unknown or unconfigured."""
        parsed = ModelId.parse(model_id)
        adapter = self.adapter(parsed.provider)
        caps = adapter.capabilities(parsed.name)  # raises ModelNotFound
        reason = adapter.unavailable_reason()
        if reason:
            raise ProviderNotConfigured(reason, provider=parsed.provider)
        return adapter, parsed.name, caps

    def catalogue(self) -> list[ModelInfo]:
        models: list[ModelInfo] = []
        for name in self.providers():
            models.extend(self.adapter(name).models())
        return models

    async def aclose(self) -> None:
        for adapter in self._adapters.values():
            try:
                await adapter.aclose()
            except Exception:  # noqa: BLE001 - shutdown continues
                logger.warning("closing %s adapter failed", adapter.provider, exc_info=True)

    def _load(self, provider: str) -> Adapter | None:
        if provider in self._adapters:
            return self._adapters[provider]
        target = PROVIDERS.get(provider)
        if target is None:
            return None
        module_name, _, class_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None  # provider not built into this gateway
            raise
        cls = getattr(module, class_name)
        adapter: Adapter = cls(self._contexts.get(provider, AdapterContext()))
        self._adapters[provider] = adapter
        return adapter
