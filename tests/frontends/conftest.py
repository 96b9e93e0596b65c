"""Fixtures for the seed-compatible front-ends: encoded speech files and a keyless gateway."""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
import numpy as np
import pytest

from tests.servers import Gateway, running_gateway

ANONYMOUS_KEY_ID = "xrx-anonymous"
ADMIN_TOKEN = "sg_admin_frontends_test"


def encode(pcm: bytes, rate: int, container: str, codec: str) -> bytes:
    """Real s16le mono PCM -> a compressed file (mp3, ogg/opus, flac...) made by PyAV."""
    out = io.BytesIO()
    with av.open(out, "w", format=container) as file:
        stream = file.add_stream(codec, rate=rate)  # type: ignore[call-overload]
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype="<i2").reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            file.mux(packet)
        for packet in stream.encode(None):
            file.mux(packet)
    return out.getvalue()


@pytest.fixture(scope="module")
def keyless_gateway() -> Iterator[Gateway]:
    """xrx clients send no key: this gateway attributes them to `ANONYMOUS_KEY_ID`."""
    with running_gateway(idle_timeout=1.0, anonymous_key_id=ANONYMOUS_KEY_ID,
                         admin_token=ADMIN_TOKEN) as gw:
        yield gw
