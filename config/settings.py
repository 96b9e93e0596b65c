"""Settings, built once from the environment in the app factory and passed down.

Every gateway setting uses the `SPEECHGATE_` prefix; provider credentials are also read
under the providers' usual names (`DEEPGRAM_API_KEY`, ...). Nothing reads `os.environ`
at import time: call `load_settings()`.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # Seconds given to open sessions to finish when the server shuts down (close 1012 after).
    drain_seconds: float = 5.0

    # --- sessions (shared/API.md §1) ------------------------------------------------------
    default_model: str = "local.tiny.en"
    idle_timeout: float = 30.0
    auth_timeout: float = 5.0
    max_session_seconds: float = 3 * 3600.0
    max_frame_bytes: int = 1024 * 1024
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

    # --- local engine --------------------------------------------------------------------
    local_model_dir: str | None = None
    local_compute_type: str = "int8"
    local_cpu_threads: int = 1
    # Concurrent decodes (CTranslate2 workers); each uses `local_cpu_threads` threads.
    local_decode_workers: int = 2
    local_download: bool = False

    # --- providers (credentials under their usual names too) -----------------------------
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
    # Bounded waits on upstreams (seconds).
    provider_connect_timeout: float = 10.0
    provider_flush_timeout: float = 10.0


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; keyword overrides win (tests, CLI flags)."""
    return Settings(**overrides)  # type: ignore[arg-type]
