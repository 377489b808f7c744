"""A loss curve as a PNG, with nothing but zlib: no plotting library in the base install.

`line_chart` draws series onto an RGB canvas (axes, ticks with labels in a built-in 3x5
font, a legend) and `png_bytes` encodes it. Good enough to glance at a run; for papers,
export the series and use a real plotting tool.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

RGB = tuple[int, int, int]

# 3x5 glyphs, rows top to bottom, bits left to right.
_FONT: dict[str, tuple[int, ...]] = {
    "0": (7, 5, 5, 5, 7),
    "1": (2, 6, 2, 2, 7),
    "2": (7, 1, 7, 4, 7),
    "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1),
    "5": (7, 4, 7, 1, 7),
    "6": (7, 4, 7, 5, 7),
    "7": (7, 1, 1, 2, 2),
    "8": (7, 5, 7, 5, 7),
    "9": (7, 5, 7, 1, 7),
    ".": (0, 0, 0, 0, 2),
    "-": (0, 0, 7, 0, 0),
    " ": (0, 0, 0, 0, 0),
    ":": (0, 2, 0, 2, 0),
    "/": (1, 1, 2, 4, 4),
    "k": (5, 5, 6, 5, 5),
    "a": (0, 7, 1, 7, 7),
    "e": (7, 5, 7, 4, 7),
    "i": (2, 0, 2, 2, 2),
    "l": (6, 2, 2, 2, 7),
    "n": (0, 6, 5, 5, 5),
    "o": (0, 7, 5, 5, 7),
    "p": (7, 5, 7, 4, 4),
    "r": (0, 7, 4, 4, 4),
    "s": (0, 7, 6, 1, 7),
    "t": (2, 7, 2, 2, 3),
    "v": (0, 5, 5, 5, 2),
    "m": (0, 7, 7, 5, 5),
    "h": (4, 4, 7, 5, 5),
    "d": (1, 1, 7, 5, 7),
    "g": (7, 5, 7, 1, 7),
    "y": (5, 5, 7, 1, 7),
    "u": (0, 5, 5, 5, 7),
    "c": (0, 7, 4, 4, 7),
    "w": (0, 5, 5, 7, 7),
    "b": (4, 4, 7, 5, 7),
    "f": (3, 2, 7, 2, 2),
    "x": (0, 5, 2, 2, 5),
    "(": (1, 2, 2, 2, 1),
    ")": (4, 2, 2, 2, 4),
}


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    color: RGB
    dots: bool = False


class Canvas:
    """An RGB raster with the few drawing primitives a line chart needs."""

    def __init__(self, width: int, height: int, background: RGB = (255, 255, 255)) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * width * height)

    def dot(self, x: int, y: int, color: RGB) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i : i + 3] = bytes(color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: RGB) -> None:
        """Bresenham."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.dot(x0, y0, color)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err, x0 = err + dy, x0 + sx
            if e2 <= dx:
                err, y0 = err + dx, y0 + sy

    def text(self, x: int, y: int, text: str, color: RGB = (0, 0, 0), scale: int = 2) -> None:
        for ch in text.lower():
            rows = _FONT.get(ch, _FONT[" "])
            for r, bits in enumerate(rows):
                for c in range(3):
                    if bits >> (2 - c) & 1:
                        for dy in range(scale):
                            for dx in range(scale):
                                self.dot(x + c * scale + dx, y + r * scale + dy, color)
            x += 4 * scale


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo or 1.0
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=mag * 10)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:.3g}"


def line_chart(
    series: Sequence[Series],
    title: str,
    x_label: str,
    y_label: str,
    width: int = 800,
    height: int = 480,
) -> Canvas:
    """Axes scaled to all points, one polyline (or dots) per series, a legend top right."""
    canvas = Canvas(width, height)
    left, right, top, bottom = 70, width - 20, 40, height - 50
    xs = [x for s in series for x, _ in s.points] or [0.0, 1.0]
    ys = [y for s in series for _, y in s.points if math.isfinite(y)] or [0.0, 1.0]
    x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y_lo, y_hi = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = 0.05 * (y_hi - y_lo)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def px(x: float) -> int:
        return round(left + (x - x_lo) / (x_hi - x_lo) * (right - left))

    def py(y: float) -> int:
        return round(bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top))

    grey, black = (225, 225, 225), (0, 0, 0)
    for t in _ticks(y_lo, y_hi):
        canvas.line(left, py(t), right, py(t), grey)
        canvas.text(8, py(t) - 5, _fmt(t))
    for t in _ticks(x_lo, x_hi):
        canvas.line(px(t), top, px(t), bottom, grey)
        canvas.text(px(t) - 8, bottom + 10, _fmt(t))
    canvas.line(left, bottom, right, bottom, black)
    canvas.line(left, top, left, bottom, black)
    canvas.text(left, 12, title, scale=3)
    canvas.text((left + right) // 2 - 16, height - 22, x_label)
    canvas.text(8, top - 16, y_label)
    for n, s in enumerate(series):
        pts = [(px(x), py(y)) for x, y in s.points if math.isfinite(y)]
        if s.dots:
            for x, y in pts:
                for dx in range(-2, 3):
                    for dy in range(-2, 3):
                        canvas.dot(x + dx, y + dy, s.color)
        else:
            for (x0, y0), (x1, y1) in itertools.pairwise(pts):
                canvas.line(x0, y0, x1, y1, s.color)
        ly = top + 8 + 16 * n
        canvas.line(right - 150, ly + 4, right - 130, ly + 4, s.color)
        canvas.line(right - 150, ly + 5, right - 130, ly + 5, s.color)
        canvas.text(right - 122, ly, s.label)
    return canvas


def png_bytes(canvas: Canvas) -> bytes:
    """The canvas as a PNG file (8-bit RGB, no filtering)."""
    stride = 3 * canvas.width
    raw = b"".join(
        b"\x00" + bytes(canvas.pixels[y * stride : (y + 1) * stride]) for y in range(canvas.height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", canvas.width, canvas.height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
