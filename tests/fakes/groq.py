"""A fake of Groq's speech-to-text API (``https://api.groq.com/openai/v1``)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from tests.fakes._server import AsgiFake
from tests.fakes.transcriptions import TranscriptionsFake

MODELS = {"whisper-large-v3", "whisper-large-v3-turbo"}


class FakeGroq(AsgiFake):
    def __init__(self, *, api_key: str = "gsk_test_key", fault: str | None = None) -> None:
        super().__init__()
        self.rest = TranscriptionsFake(api_key, MODELS, prefix="/openai/v1", fault=fault)

    @property
    def base_url(self) -> str:
        return f"{self.http_url}/openai/v1"

    def stopping(self) -> None:
        self.rest.released.set()

    def app(self) -> Any:
        return Starlette(routes=self.rest.routes())
