"""A reader for the portable anymap formats: PGM (grey) and PPM (colour), ASCII and binary.

Netpbm's format (P2/P5 grey, P3/P6 colour): a magic number, width, height and maxval as
whitespace-separated decimals (`#` starts a comment up to the end of the line), one whitespace
byte, then the samples, row by row: decimals in the ASCII forms, bytes in the binary ones (two
bytes big-endian when maxval > 255). No image library needed.
"""

from __future__ import annotations

import numpy as np

CHANNELS = {b"P2": 1, b"P5": 1, b"P3": 3, b"P6": 3}


class PnmError(ValueError):
    """Not a PGM/PPM file, or a damaged one."""


def _header(data: bytes) -> tuple[bytes, list[int], int]:
    """(magic, [width, height, maxval], offset of the samples)."""
    magic = data[:2]
    if magic not in CHANNELS:
        raise PnmError(f"not a PGM/PPM file (magic {magic!r})")
    fields: list[int] = []
    i = 2
    while len(fields) < 3:
        while i < len(data) and data[i : i + 1].isspace():
            i += 1
        if i >= len(data):
            raise PnmError("header ends early")
        if data[i : i + 1] == b"#":
            while i < len(data) and data[i : i + 1] not in (b"\n", b"\r"):
                i += 1
            continue
        start = i
        while i < len(data) and data[i : i + 1].isdigit():
            i += 1
        if start == i:
            raise PnmError(f"header field {len(fields) + 1} is not a number")
        fields.append(int(data[start:i]))
    return magic, fields, i + 1  # one whitespace byte ends the header


def read_pnm(data: bytes) -> np.ndarray:
    """The image as float32 (H, W, C) in [0, 1]."""
    magic, (width, height, maxval), offset = _header(data)
    if width < 1 or height < 1 or not 0 < maxval < 65536:
        raise PnmError(f"bad size {width}x{height} or maxval {maxval}")
    c = CHANNELS[magic]
    n = width * height * c
    if magic in (b"P2", b"P3"):
        try:
            samples = np.array(data[offset:].split(), dtype=np.int64)
        except ValueError as e:
            raise PnmError("ASCII samples are not all numbers") from e
    else:
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype("u1")
        samples = np.frombuffer(data, dtype=dtype, count=-1, offset=offset)
    if samples.size < n:
        raise PnmError(f"{samples.size} samples, {n} expected")
    image = samples[:n].astype(np.float32).reshape(height, width, c) / maxval
    return np.clip(image, 0.0, 1.0)


def write_pnm(image: np.ndarray) -> bytes:
    """A binary PGM (H, W) or (H, W, 1), or PPM (H, W, 3), of floats in [0, 1] (8 bits)."""
    if image.ndim == 2:
        image = image[:, :, None]
    h, w, c = image.shape
    magic = {1: b"P5", 3: b"P6"}[c]
    body = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8).tobytes()
    return magic + f"\n{w} {h}\n255\n".encode() + body
