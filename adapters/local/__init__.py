"""The built-in local Whisper engine (faster-whisper / CTranslate2): adapter, engine, VAD."""
