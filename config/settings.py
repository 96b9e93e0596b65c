"""Settings, built once from the environment in the app factory and passed down.

Every gateway setting uses the `SPEECHGATE_` prefix; provider credentials are also read
under the providers' usual names (`DEEPGRAM_API_KEY`, ...). Nothing reads `os.environ`
at import time: call `load_settings()`.

The environment is flat (``SPEECHGATE_LOCAL_MODEL_DIR``, ``SPEECHGATE_DEEPGRAM_BASE_URL``):
`Settings` declares one field per variable. What belongs to one adapter is also offered as
one typed group, built from those fields: `Settings.local` (`LocalEngineSettings`) and one
`ProviderSettings` per cloud provider (`Settings.deepgram`, ..., all in
`Settings.providers`). The gateway hands each adapter its group and nothing else. A group
may also be given whole in code, ``load_settings(local=LocalEngineSettings(...))``: it then
replaces every ``local_*`` value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProviderSettings(BaseModel):
    """One cloud provider's settings (``<PROVIDER>_API_KEY``, ``SPEECHGATE_<PROVIDER>_*``)."""

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr | None = None
    base_url: str

    def secret(self) -> str | None:
        """The API key in clear, for the adapter that sends it upstream."""
        return self.api_key.get_secret_value() if self.api_key else None


class LocalEngineSettings(BaseModel):
    """The local engine's settings (``SPEECHGATE_LOCAL_*``)."""

    model_config = ConfigDict(frozen=True)

    # A CTranslate2 model directory: ``<dir>/<model>/model.bin``, or one model itself.
    model_dir: str | None = None
    compute_type: str = "int8"
    # Threads per decode (CTranslate2 intra-op threads).
    cpu_threads: int = 1
    # Concurrent decodes (CTranslate2 workers); each uses `cpu_threads` threads.
    decode_workers: int = 2
    # Fetch missing weights from Hugging Face on first use.
    download: bool = False


# Each group given whole (``Settings(local=...)``) -> its model and the prefix of its flat fields.
_GROUPS: dict[str, tuple[type[BaseModel], str]] = {
    "local": (LocalEngineSettings, "local_"),
    "deepgram": (ProviderSettings, "deepgram_"),
    "assemblyai": (ProviderSettings, "assemblyai_"),
    "openai": (ProviderSettings, "openai_"),
    "gladia": (ProviderSettings, "gladia_"),
    "groq": (ProviderSettings, "groq_"),
    "soniox": (ProviderSettings, "soniox_"),
    "elevenlabs": (ProviderSettings, "elevenlabs_"),
}


def _env(name: str) -> AliasChoices:
    """Accept `SPEECHGATE_<NAME>` and the provider's usual variable `<NAME>`."""
    return AliasChoices(f"SPEECHGATE_{name}", name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPEECHGATE_", extra="ignore", frozen=True, populate_by_name=True
    )

    # --- server -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # "text" (default) or "json": one JSON object per line (app/logs.py); never a secret.
    log_format: Literal["text", "json"] = "text"
    # Seconds given to open sessions to finish when the server shuts down (close 1012 after).
    drain_seconds: float = 5.0
    # A connection must send its whole request line and headers within this many seconds.
    handshake_timeout: float = Field(10.0, gt=0)
    # Longest request target (path + query) accepted; longer ones get HTTP 414.
    max_url_bytes: int = Field(32 * 1024, ge=1024)
    # All request headers together; more gets HTTP 431.
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are trusted (comma-separated IPs or
    # CIDRs, "*" for any). Empty: none, the client address is the TCP peer's.
    forwarded_allow_ips: str = ""
    # WebSocket keepalive: a ping every interval; no pong within the timeout closes 1011, but
    # only while the gateway is reading (a client we are slowing down is never timed out).
    ws_ping_interval: float | None = Field(20.0, gt=0)
    ws_ping_timeout: float | None = Field(20.0, gt=0)

    # --- sessions (shared/API.md §1) ------------------------------------------------------
    default_model: str = "local.tiny.en"
    idle_timeout: float = 30.0
    auth_timeout: float = 5.0
    max_session_seconds: float = 3 * 3600.0
    max_frame_bytes: int = 1024 * 1024
    # POST /v1/transcribe: longest decoded audio accepted (413 beyond; decoding stops there).
    max_batch_seconds: float = Field(3 * 3600.0, gt=0)
    # Fallback: audio since the last final kept to replay into a fallback provider (seconds;
    # what is older is reported as `lost_seconds` in `provider_switched`).
    replay_seconds: float = 300.0

    # --- keys and limits -----------------------------------------------------------------
    redis_url: str | None = None
    dev_key: SecretStr | None = None
    admin_token: SecretStr | None = None
    # Default limits for keys that set none (0 = unlimited).
    default_max_concurrent_streams: int = 0
    default_sessions_per_minute: int = 0
    default_audio_seconds_per_day: float = 0.0
    default_audio_seconds_per_month: float = 0.0
    limits_fail_open: bool = False
    # How long a crashed process's concurrency slots stay taken (heartbeats renew live ones).
    lease_ttl_seconds: float = Field(30.0, gt=0, le=60)
    failed_auth_per_minute: int = 20
    # xrx clients send no key: attribute anonymous /api/v1/ws connections to this key id.
    anonymous_key_id: str | None = None
    # xrx's own variable name is accepted too (faster_whisper | groq | deepgram).
    stt_provider: str = Field("faster_whisper", validation_alias=_env("STT_PROVIDER"))

    # --- local engine (`LocalEngineSettings`) ---------------------------------------------
    local_model_dir: str | None = None
    local_compute_type: str = "int8"
    local_cpu_threads: int = 1
    # Concurrent decodes (CTranslate2 workers); each uses `local_cpu_threads` threads.
    local_decode_workers: int = 2
    local_download: bool = False

    # --- providers (`ProviderSettings`; credentials under their usual names too) ----------
    deepgram_api_key: SecretStr | None = Field(None, validation_alias=_env("DEEPGRAM_API_KEY"))
    deepgram_base_url: str = "wss://api.deepgram.com"
    assemblyai_api_key: SecretStr | None = Field(None, validation_alias=_env("ASSEMBLYAI_API_KEY"))
    assemblyai_base_url: str = "wss://streaming.assemblyai.com"
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str = "https://api.openai.com/v1"
    gladia_api_key: SecretStr | None = Field(None, validation_alias=_env("GLADIA_API_KEY"))
    gladia_base_url: str = "https://api.gladia.io"
    groq_api_key: SecretStr | None = Field(None, validation_alias=_env("GROQ_API_KEY"))
    groq_base_url: str = "https://api.groq.com/openai/v1"
    # Groq bills each request as >= 10 s: hold a short utterance up to this many seconds so
    # the next ones can join its upload (0 disables; see docs/providers.md).
    groq_merge_wait: float = 2.0
    soniox_api_key: SecretStr | None = Field(None, validation_alias=_env("SONIOX_API_KEY"))
    soniox_base_url: str = "wss://stt-rt.soniox.com"
    elevenlabs_api_key: SecretStr | None = Field(None, validation_alias=_env("ELEVENLABS_API_KEY"))
    # The realtime WebSocket is derived from it (https -> wss).
    elevenlabs_base_url: str = "https://api.elevenlabs.io"
    # Bounded waits on upstreams (seconds). Connect: connection and session setup. Flush:
    # seconds *without progress* (no message from the provider) after the end of stream or
    # a finalize before it fails 4504, and the bound of each REST upload (Groq, whisper-1).
    provider_connect_timeout: float = 10.0
    provider_flush_timeout: float = 10.0
    # Seconds a streaming provider may answer nothing at all (no message, no pong to our
    # pings) before it is declared stalled (4504, or fallback); unset: each provider's own.
    provider_stall_timeout: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _flatten_groups(cls, data: Any) -> Any:
        """A group given whole (``local=LocalEngineSettings(...)``) sets its flat fields."""
        if not isinstance(data, dict) or not data.keys() & _GROUPS.keys():
            return data
        data = dict(data)
        for name, (model, prefix) in _GROUPS.items():
            if name not in data:
                continue
            for key, value in model.model_validate(data.pop(name)):
                field = prefix + key
                # The group wins over the environment, which may hold the field's aliases.
                alias = cls.model_fields[field].validation_alias
                for choice in alias.choices if isinstance(alias, AliasChoices) else [alias]:
                    if isinstance(choice, str):
                        data.pop(choice, None)
                data[field] = value
        return data

    # --- typed groups: what each adapter is handed -----------------------------------------

    @property
    def local(self) -> LocalEngineSettings:
        return LocalEngineSettings(
            model_dir=self.local_model_dir, compute_type=self.local_compute_type,
            cpu_threads=self.local_cpu_threads, decode_workers=self.local_decode_workers,
            download=self.local_download)

    @property
    def deepgram(self) -> ProviderSettings:
        return ProviderSettings(api_key=self.deepgram_api_key, base_url=self.deepgram_base_url)

    @property
    def assemblyai(self) -> ProviderSettings:
        return ProviderSettings(api_key=self.assemblyai_api_key,
                                base_url=self.assemblyai_base_url)

    @property
    def openai(self) -> ProviderSettings:
        return ProviderSettings(api_key=self.openai_api_key, base_url=self.openai_base_url)

    @property
    def gladia(self) -> ProviderSettings:
        return ProviderSettings(api_key=self.gladia_api_key, base_url=self.gladia_base_url)

    @property
    def groq(self) -> ProviderSettings:
        return ProviderSettings(api_key=self.groq_api_key, base_url=self.groq_base_url)

    @property
    def soniox(self) -> ProviderSettings:
        return ProviderSettings(api_key=self.soniox_api_key, base_url=self.soniox_base_url)

    @property
    def elevenlabs(self) -> ProviderSettings:
        return ProviderSettings(api_key=self.elevenlabs_api_key,
                                base_url=self.elevenlabs_base_url)

    @property
    def providers(self) -> dict[str, ProviderSettings]:
        """Every cloud provider's group, by provider name (`adapters.registry.PROVIDERS`)."""
        return {"deepgram": self.deepgram, "assemblyai": self.assemblyai,
                "openai": self.openai, "gladia": self.gladia, "groq": self.groq,
                "soniox": self.soniox, "elevenlabs": self.elevenlabs}


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; keyword overrides win (tests, CLI flags)."""
    return Settings(**overrides)  # type: ignore[arg-type]
