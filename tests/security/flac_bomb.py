"""A decompression bomb: hours of silence in a few MB of valid FLAC, written frame by frame.

Every frame holds one CONSTANT subframe (a 16-bit zero for 4096 samples), so 4 h at 48 kHz is
168,750 frames of 12-13 bytes: about 2.2 MB that decode to 1.3 GB of PCM. With
``declare_length=False`` STREAMINFO says "total samples unknown", as a streamed encoder
writes it, so the length is only found by decoding. https://xiph.org/flac/format.html
"""

from __future__ import annotations

BLOCK = 4096
RATE_CODES = {8000: 0b0100, 16000: 0b0101, 22050: 0b0110, 24000: 0b0111, 32000: 0b1000,
              44100: 0b1001, 48000: 0b1010}


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC16 = _crc16_table()


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def silent_flac(seconds: float, rate: int = 48000, *, declare_length: bool = True) -> bytes:
    frames = int(seconds * rate) // BLOCK
    total = frames * BLOCK if declare_length else 0
    info = (BLOCK.to_bytes(2, "big") + BLOCK.to_bytes(2, "big") + (0).to_bytes(3, "big")
            + (0).to_bytes(3, "big")
            + ((rate << 44) | (0 << 41) | (15 << 36) | total).to_bytes(8, "big") + bytes(16))
    out = bytearray(b"fLaC" + bytes([0x80, 0, 0, len(info)]) + info)
    fixed = bytes([0xFF, 0xF8, (0b1100 << 4) | RATE_CODES[rate], 0b0000_100_0])
    for number in range(frames):
        header = fixed + chr(number).encode("utf-8", "surrogatepass")
        frame = header + bytes([_crc8(header), 0x00, 0x00, 0x00])
        out += frame + _crc16(frame).to_bytes(2, "big")
    return bytes(out)
