"""Line charts as PNG images, drawn by matplotlib's Agg renderer (no display needed).

The figure is built on `matplotlib.figure.Figure` with an Agg canvas of its own rather than
through pyplot, so no global state, no backend selection and no GUI are involved: the same
call works in `make run`, in the control plane and in a test. matplotlib comes with the
`server` and `dev` extras.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


@dataclass(frozen=True)
class Series:
    """One labelled curve; points whose y is not finite (a diverged step) are left out."""

    label: str
    points: Sequence[tuple[float, float]]
    color: str | None = None  # any matplotlib colour; None: the next of the default cycle
    # line; dots (markers only); markers (a line through its points); faint (a thin, pale line)
    style: Literal["line", "dots", "markers", "faint"] = "line"


def line_chart(
    series: Sequence[Series],
    title: str,
    x_label: str,
    y_label: str,
    width: int = 800,
    height: int = 480,
    log_y: bool = False,
) -> Figure:
    """A figure of `width` x `height` pixels: one curve per non-empty series, a legend."""
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in series:
        pts = [(x, y) for x, y in s.points if math.isfinite(y)]
        if not pts:
            continue
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        if s.style == "dots":
            ax.plot(xs, ys, "o", color=s.color, label=s.label, markersize=4)
        elif s.style == "markers":
            ax.plot(xs, ys, "o-", color=s.color, label=s.label, linewidth=1.6, markersize=4)
        elif s.style == "faint":
            ax.plot(xs, ys, color=s.color, label=s.label, linewidth=0.8, alpha=0.45)
        else:
            ax.plot(xs, ys, color=s.color, label=s.label, linewidth=1.6)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right")
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as a PNG file."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
