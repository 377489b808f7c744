"""Benchmark figures: PNG files under docs/figures/, drawn with matplotlib (Agg, no display).

    from figures import save_curves        # in a bench/*.py script (bench/ is on sys.path)
    save_curves(args.figures / "w4a4-training-loss.png", {"qat": [(step, loss), ...]}, ...)

Line charts are the run report's own (`carina.platform.embedded.plot`), so a loss curve in
the docs looks like the one `make run` writes; each curve is drawn raw (faint) and as a
centred moving mean when it has many points. Scripts take `--figures DIR` (docs/figures by
convention) and draw nothing without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from carina.platform.embedded.plot import Series, line_chart, png_bytes
from carina.platform.embedded.report import smooth

FIGURES_DIR = Path(__file__).resolve().parents[1] / "docs" / "figures"
# Below this many points a curve is drawn as it is: smoothing a short curve hides its shape.
SMOOTH_FROM = 50


def curve_series(curves: Mapping[str, Sequence[tuple[float, float]]]) -> list[Series]:
    """One colour per curve: a line through its points, or, from SMOOTH_FROM points, the raw
    curve faint plus its moving mean."""
    series: list[Series] = []
    for n, (label, points) in enumerate(curves.items()):
        color = f"C{n}"
        pts = [(float(x), float(y)) for x, y in points]
        if len(pts) >= SMOOTH_FROM:
            series.append(Series(f"{label} (per step)", pts, color, "faint"))
            series.append(Series(f"{label} (moving mean)", smooth(pts), color))
        else:
            series.append(Series(label, pts, color, "markers"))
    return series


def save_curves(
    path: Path,
    curves: Mapping[str, Sequence[tuple[float, float]]],
    title: str,
    x_label: str,
    y_label: str,
    log_y: bool = False,
) -> Path:
    """The curves as one labelled line chart, written to `path` as a PNG."""
    fig = line_chart(curve_series(curves), title, x_label, y_label, log_y=log_y)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig))
    return path


if __name__ == "__main__":
    print(f"{__doc__.splitlines()[0]} (a module of the other scripts; nothing to run)")
