"""G.711 μ-law and A-law to 16-bit PCM (ITU-T G.711), for OpenAI's ``audio/pcmu`` and
``audio/pcma`` input formats: 8 kHz, one byte per sample."""

from __future__ import annotations

import numpy as np


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype("<i2")


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8,
                         ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, magnitude, -magnitude).astype("<i2")


ULAW = _ulaw_table()
ALAW = _alaw_table()


def decode(data: bytes, law: str) -> bytes:
    """``law`` is "pcmu" (μ-law) or "pcma" (A-law); returns s16le PCM at the same rate."""
    table = ULAW if law == "pcmu" else ALAW
    return table[np.frombuffer(data, dtype=np.uint8)].tobytes()
