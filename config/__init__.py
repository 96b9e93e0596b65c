"""Gateway configuration: one immutable `Settings` value built from the environment."""

from config.settings import LocalEngineSettings, ProviderSettings, Settings, load_settings

__all__ = ["LocalEngineSettings", "ProviderSettings", "Settings", "load_settings"]
