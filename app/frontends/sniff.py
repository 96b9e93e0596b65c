"""Telling encoded audio from raw PCM by its first bytes, where there is no magic number.

A bare MP3 (no ID3 tag) or an ADTS AAC stream starts with an 11/12-bit frame sync, which a
negative PCM sample can also produce. One header alone proves nothing; a header whose frame
length lands exactly on a second, consistent header does. `frame_stream` checks that chain.
`not_audio` names bytes that are clearly something else (text, JSON, images, archives, MP4),
so a client that sent them gets an error instead of a transcript of noise.
"""

from __future__ import annotations

MAX_FRAME_BYTES = 8192  # bytes of head worth waiting for to see a second frame header

_MPEG_BITRATES = {  # (MPEG-1?, layer) -> kbit/s by index 1..14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_ADTS_RATES = 13  # sampling-frequency indexes 0..12 are defined


def mpeg_frame(head: bytes, pos: int = 0) -> tuple[int, tuple[int, int, int]] | None:
    """(frame length, (version, layer, rate)) of an MPEG audio frame header at `pos`."""
    if len(head) < pos + 4 or head[pos] != 0xFF or head[pos + 1] & 0xE0 != 0xE0:
        return None
    b1, b2 = head[pos + 1], head[pos + 2]
    version, layer_bits = (b1 >> 3) & 3, (b1 >> 1) & 3
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    if version == 1 or layer_bits == 0 or not 1 <= bitrate_index <= 14 or rate_index == 3:
        return None
    layer = 4 - layer_bits
    mpeg1 = version == 3
    bitrate = _MPEG_BITRATES[(mpeg1, layer)][bitrate_index - 1] * 1000
    rate = _MPEG_RATES[version][rate_index]
    if layer == 1:
        length = (12 * bitrate // rate + padding) * 4
    elif layer == 3 and not mpeg1:
        length = 72 * bitrate // rate + padding
    else:
        length = 144 * bitrate // rate + padding
    return length, (version, layer, rate)


def adts_frame(head: bytes, pos: int = 0) -> tuple[int, tuple[int, int, int]] | None:
    """(frame length, (profile, rate index, channels)) of an ADTS header at `pos`."""
    if len(head) < pos + 7 or head[pos] != 0xFF or head[pos + 1] & 0xF6 != 0xF0:
        return None
    h = head[pos:pos + 7]
    rate_index = (h[2] >> 2) & 0xF
    length = ((h[3] & 0x3) << 11) | (h[4] << 3) | (h[5] >> 5)
    if rate_index >= _ADTS_RATES or length < 7:
        return None
    return length, (h[2] >> 6, rate_index, ((h[2] & 1) << 2) | (h[3] >> 6))


def frame_stream(head: bytes, final: bool) -> str | None:
    """``"mp3"`` / ``"aac"`` when `head` starts a chain of two consistent frames (or one
    frame that is the whole stream), ``"more"`` when that cannot be told yet, else None."""
    for name, parse in (("aac", adts_frame), ("mp3", mpeg_frame)):
        first = parse(head)
        if first is None:
            continue
        length, kind = first
        if len(head) < length + 7:
            if final:
                return name if len(head) == length else None
            return "more" if length + 7 <= MAX_FRAME_BYTES else None
        second = parse(head, length)
        if second is not None and second[1] == kind:
            return name
    return None


_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"%PDF", "a PDF"),
    (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "gzip data"), (b"GIF8", "a GIF image"),
)


def not_audio(head: bytes) -> str | None:
    """What the first bytes are when they are clearly not audio, else None."""
    for magic, name in _BINARY_MAGIC:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        return "MP4/M4A, which cannot be decoded as a stream (send WAV, MP3, OGG, FLAC or WebM)"
    sample = head[:256]
    if len(sample) >= 16:
        printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in sample)
        if printable == len(sample):
            kind = "JSON" if sample.lstrip()[:1] in (b"{", b"[") else "text"
            return f"{kind}, not audio"
    return None
