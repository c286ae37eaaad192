"""16-bit PNG with numpy and zlib: PIL reads 16-bit colour PNGs as 8-bit and cannot write them.

Reads non-interlaced 16-bit PNGs of every colour type (all five row filters); writes gray, gray +
alpha, RGB and RGBA at 16 bits.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # colour type -> samples per pixel


def header(head: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) from a file's first 29 bytes, or None if not a PNG."""
    if len(head) < 29 or not head.startswith(SIGNATURE) or head[12:16] != b"IHDR":
        return None
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return w, h, depth, ctype, interlace


def _chunks(data: bytes):
    pos = len(SIGNATURE)
    while pos + 8 <= len(data):
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or len(data) < pos + 12 + length:
            raise ValueError(f"truncated {tag.decode('latin-1')!r} chunk")
        if zlib.crc32(tag + body) != struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]:
            raise ValueError(f"bad CRC in the {tag.decode('latin-1')!r} chunk")
        yield tag, body
        if tag == b"IEND":
            return
        pos += 12 + length
    raise ValueError("no IEND chunk (truncated file)")


def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """PNG row filters undone; `rows` is [H, 1 + stride] uint8 with each row's filter type first."""
    h, stride = rows.shape[0], rows.shape[1] - 1
    out = np.empty((h, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(h):
        kind, line = int(rows[y, 0]), rows[y, 1:]
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: running sum per byte lane, mod 256
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            cur = line + prev
        elif kind in (3, 4):  # Average, Paeth: sequential along the row; plain ints beat tiny numpy ops
            f, b = line.tolist(), [0] * bpp + prev.tolist()
            r = [0] * (bpp + stride)  # r[i + bpp] is byte i reconstructed; bpp leading zeros
            for i in range(stride):
                a, up = r[i], b[i + bpp]
                if kind == 3:
                    pred = (a + up) >> 1
                else:
                    c = b[i]
                    pa, pb, pc = abs(up - c), abs(a - c), abs(a + up - 2 * c)
                    pred = a if pa <= pb and pa <= pc else up if pb <= pc else c
                r[i + bpp] = (f[i] + pred) & 255
            cur = np.array(r[bpp:], np.uint8)
        else:
            raise ValueError(f"row {y} has filter type {kind}; expected 0 to 4")
        out[y] = prev = cur
    return out


def read(path: str | Path) -> np.ndarray:
    """HxWxC uint16 (C = 1, 2, 3 or 4 per colour type) of a non-interlaced 16-bit PNG; ValueError otherwise."""
    data = Path(path).read_bytes()
    head = header(data[:29])
    if head is None:
        raise ValueError("not a PNG file")
    w, h, depth, ctype, interlace = head
    if depth != 16 or ctype not in CHANNELS or interlace != 0:
        raise ValueError(f"expected a non-interlaced 16-bit PNG, got bit depth {depth}, colour type {ctype}, "
                         f"interlace {interlace}")
    c = CHANNELS[ctype]
    try:
        raw = zlib.decompress(b"".join(body for tag, body in _chunks(data) if tag == b"IDAT"))
    except zlib.error as e:
        raise ValueError(f"corrupt image data ({e})") from None
    stride = w * c * 2
    if len(raw) < h * (stride + 1):
        raise ValueError(f"image data has {len(raw)} bytes, {w}x{h}x{c} at 16 bits needs {h * (stride + 1)}")
    rows = np.frombuffer(raw, np.uint8, h * (stride + 1)).reshape(h, stride + 1)
    return _unfilter(rows, 2 * c).view(">u2").reshape(h, w, c).astype(np.uint16)


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def encode(pixels: np.ndarray) -> bytes:
    """PNG bytes of HxWxC uint16 pixels (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA); rows use the Up filter."""
    if pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"expected HxWxC uint16 pixels with C in 1..4, got {pixels.dtype} {pixels.shape}")
    h, w, c = pixels.shape
    ctype = {v: k for k, v in CHANNELS.items()}[c]
    lines = pixels.astype(">u2").reshape(h, w * c).view(np.uint8)
    filtered = np.empty((h, lines.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2
    filtered[:, 1:] = lines - np.concatenate([np.zeros_like(lines[:1]), lines[:-1]])  # wraps mod 256
    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)) + _chunk(b"IEND", b"")
