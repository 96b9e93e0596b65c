"""Settings from the environment: every variable keeps its name, and each adapter is handed its
own typed group (`LocalEngineSettings`, `ProviderSettings`), never the whole config."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from adapters.local.adapter import LocalAdapter
from adapters.registry import PROVIDERS
from app.gateway import adapter_contexts
from config import LocalEngineSettings, ProviderSettings, load_settings
from config import settings as settings_module

CLOUD = ("deepgram", "assemblyai", "openai", "gladia", "groq")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("SPEECHGATE_") or name.endswith("_API_KEY") or name == "STT_PROVIDER":
            monkeypatch.delenv(name)


# Every variable the gateway reads today: (variable, value, field, parsed value).
VARIABLES: list[tuple[str, str, str, Any]] = [
    ("SPEECHGATE_HOST", "0.0.0.0", "host", "0.0.0.0"),
    ("SPEECHGATE_PORT", "9001", "port", 9001),
    ("SPEECHGATE_LOG_LEVEL", "debug", "log_level", "debug"),
    ("SPEECHGATE_DRAIN_SECONDS", "2.5", "drain_seconds", 2.5),
    ("SPEECHGATE_DEFAULT_MODEL", "deepgram.nova-3", "default_model", "deepgram.nova-3"),
    ("SPEECHGATE_IDLE_TIMEOUT", "12", "idle_timeout", 12.0),
    ("SPEECHGATE_AUTH_TIMEOUT", "3", "auth_timeout", 3.0),
    ("SPEECHGATE_MAX_SESSION_SECONDS", "600", "max_session_seconds", 600.0),
    ("SPEECHGATE_MAX_FRAME_BYTES", "65536", "max_frame_bytes", 65536),
    ("SPEECHGATE_REPLAY_SECONDS", "45", "replay_seconds", 45.0),
    ("SPEECHGATE_REDIS_URL", "redis://h:6379/2", "redis_url", "redis://h:6379/2"),
    ("SPEECHGATE_DEFAULT_MAX_CONCURRENT_STREAMS", "3", "default_max_concurrent_streams", 3),
    ("SPEECHGATE_DEFAULT_SESSIONS_PER_MINUTE", "7", "default_sessions_per_minute", 7),
    ("SPEECHGATE_DEFAULT_AUDIO_SECONDS_PER_DAY", "60", "default_audio_seconds_per_day", 60.0),
    ("SPEECHGATE_DEFAULT_AUDIO_SECONDS_PER_MONTH", "600", "default_audio_seconds_per_month",
     600.0),
    ("SPEECHGATE_LIMITS_FAIL_OPEN", "true", "limits_fail_open", True),
    ("SPEECHGATE_LEASE_TTL_SECONDS", "12", "lease_ttl_seconds", 12.0),
    ("SPEECHGATE_FAILED_AUTH_PER_MINUTE", "5", "failed_auth_per_minute", 5),
    ("SPEECHGATE_ANONYMOUS_KEY_ID", "xrx", "anonymous_key_id", "xrx"),
    ("SPEECHGATE_STT_PROVIDER", "groq", "stt_provider", "groq"),
    ("STT_PROVIDER", "deepgram", "stt_provider", "deepgram"),
    ("SPEECHGATE_LOCAL_MODEL_DIR", "/models", "local_model_dir", "/models"),
    ("SPEECHGATE_LOCAL_COMPUTE_TYPE", "float32", "local_compute_type", "float32"),
    ("SPEECHGATE_LOCAL_CPU_THREADS", "3", "local_cpu_threads", 3),
    ("SPEECHGATE_LOCAL_DECODE_WORKERS", "4", "local_decode_workers", 4),
    ("SPEECHGATE_LOCAL_DOWNLOAD", "true", "local_download", True),
    ("SPEECHGATE_PROVIDER_CONNECT_TIMEOUT", "4", "provider_connect_timeout", 4.0),
    ("SPEECHGATE_PROVIDER_FLUSH_TIMEOUT", "6", "provider_flush_timeout", 6.0),
] + [
    (f"SPEECHGATE_{name.upper()}_BASE_URL", f"ws://{name}.example", f"{name}_base_url",
     f"ws://{name}.example") for name in CLOUD
]
SECRETS = ["SPEECHGATE_DEV_KEY", "SPEECHGATE_ADMIN_TOKEN"] + [
    f"{prefix}{name.upper()}_API_KEY" for name in CLOUD for prefix in ("", "SPEECHGATE_")]


@pytest.mark.parametrize(("variable", "raw", "field", "value"), VARIABLES,
                         ids=[v[0] for v in VARIABLES])
def test_every_variable_is_read(monkeypatch: pytest.MonkeyPatch, variable: str, raw: str,
                                field: str, value: Any) -> None:
    default = getattr(load_settings(), field)
    assert default != value  # the variable, not the default, gives the value below
    monkeypatch.setenv(variable, raw)
    assert getattr(load_settings(), field) == value


@pytest.mark.parametrize("variable", SECRETS)
def test_every_secret_is_read_and_never_shown(monkeypatch: pytest.MonkeyPatch,
                                              variable: str) -> None:
    monkeypatch.setenv(variable, "s3cr3t-value")
    settings = load_settings()
    field = variable.removeprefix("SPEECHGATE_").lower()
    secret = getattr(settings, field)
    assert isinstance(secret, SecretStr) and secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings) and "s3cr3t-value" not in str(settings)
    for group in settings.providers.values():
        assert "s3cr3t-value" not in repr(group)


def test_the_gateway_prefix_wins_over_the_providers_usual_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "usual")
    monkeypatch.setenv("SPEECHGATE_DEEPGRAM_API_KEY", "prefixed")
    assert load_settings().deepgram.secret() == "prefixed"


def test_defaults_of_the_groups_match_the_flat_defaults() -> None:
    settings = load_settings()
    assert settings.local == LocalEngineSettings()
    assert settings.deepgram == ProviderSettings(base_url="wss://api.deepgram.com")
    assert settings.assemblyai.base_url == "wss://streaming.assemblyai.com"
    assert settings.openai.base_url == "https://api.openai.com/v1"
    assert settings.gladia.base_url == "https://api.gladia.io"
    assert settings.groq.base_url == "https://api.groq.com/openai/v1"
    assert all(group.api_key is None for group in settings.providers.values())


def test_every_provider_has_its_group() -> None:
    assert set(load_settings().providers) == set(PROVIDERS) - {"local"}
    assert set(settings_module._GROUPS) == set(PROVIDERS)  # each may be given whole


def test_each_adapter_gets_its_own_typed_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLOUD:
        monkeypatch.setenv(f"{name.upper()}_API_KEY", f"key-of-{name}")
        monkeypatch.setenv(f"SPEECHGATE_{name.upper()}_BASE_URL", f"ws://{name}.example")
    monkeypatch.setenv("SPEECHGATE_LOCAL_MODEL_DIR", "/models")
    monkeypatch.setenv("SPEECHGATE_LOCAL_DECODE_WORKERS", "3")
    monkeypatch.setenv("SPEECHGATE_LOCAL_CPU_THREADS", "2")
    monkeypatch.setenv("SPEECHGATE_LOCAL_COMPUTE_TYPE", "int8_float32")
    monkeypatch.setenv("SPEECHGATE_PROVIDER_CONNECT_TIMEOUT", "4")
    monkeypatch.setenv("SPEECHGATE_PROVIDER_FLUSH_TIMEOUT", "6")
    contexts = adapter_contexts(load_settings())
    assert set(contexts) == set(PROVIDERS)
    for name in CLOUD:
        context = contexts[name]
        assert context.api_key == f"key-of-{name}" and context.base_url == f"ws://{name}.example"
        assert context.local is None
        assert (context.connect_timeout, context.flush_timeout) == (4.0, 6.0)
    local = contexts["local"]
    assert local.api_key is None and local.base_url is None
    assert local.local == LocalEngineSettings(model_dir="/models", compute_type="int8_float32",
                                              cpu_threads=2, decode_workers=3)
    # The local adapter builds its engine from that group.
    adapter = LocalAdapter(local)
    try:
        options = adapter.engine.load_options
        assert (options.compute_type, options.cpu_threads, options.workers) == (
            "int8_float32", 2, 3)
        assert adapter.weights("large-v3").reason is not None  # /models holds nothing
    finally:
        adapter.engine.close()


def test_flat_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "from-env")
    monkeypatch.setenv("SPEECHGATE_LOCAL_MODEL_DIR", "/env")
    settings = load_settings(deepgram_api_key="from-code", local_model_dir="/code",
                             idle_timeout=1.0)
    assert settings.deepgram.secret() == "from-code"
    assert settings.local.model_dir == "/code" and settings.idle_timeout == 1.0


def test_a_group_given_whole_replaces_its_flat_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "from-env")
    monkeypatch.setenv("SPEECHGATE_LOCAL_CPU_THREADS", "3")
    monkeypatch.setenv("SPEECHGATE_GROQ_API_KEY", "groq-env")
    deepgram = ProviderSettings(api_key=SecretStr("from-code"), base_url="ws://dg.example")
    local = LocalEngineSettings(model_dir="/code", decode_workers=1)
    settings = load_settings(deepgram=deepgram, local=local)
    assert settings.deepgram == deepgram and settings.local == local  # cpu_threads back to 1
    assert settings.deepgram_api_key == deepgram.api_key
    assert settings.groq.secret() == "groq-env"  # other groups untouched
    # Plain mappings are validated into the group.
    assert load_settings(gladia={"base_url": "https://gl.example"}).gladia.base_url == (
        "https://gl.example")
    with pytest.raises(ValidationError):
        load_settings(local={"cpu_threads": "many"})


def test_settings_and_groups_are_values() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.local.model_dir = "/elsewhere"
    with pytest.raises(ValidationError):
        settings.local.model_dir = "/elsewhere"


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_each_group_given_whole_comes_back_whole(name: str) -> None:
    group: LocalEngineSettings | ProviderSettings
    if name == "local":
        group = LocalEngineSettings(model_dir="/m", compute_type="float32", cpu_threads=5,
                                    decode_workers=6, download=True)
    else:
        group = ProviderSettings(api_key=SecretStr(f"{name}-key"), base_url=f"ws://{name}.test")
    settings = load_settings(**{name: group})
    assert getattr(settings, name) == group
    if name != "local":
        assert settings.providers[name] == group
        context = adapter_contexts(settings)[name]
        assert (context.api_key, context.base_url) == (f"{name}-key", f"ws://{name}.test")
