"""The run report: curves read from rank 0's JSON log lines, and the loss-curve PNG it writes."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from builders import make_job
from PIL import Image

from carina.platform.embedded.launcher import run_paths
from carina.platform.embedded.plot import Series, line_chart, png_bytes
from carina.platform.embedded.report import read_curves, report, smooth
from carina.platform.embedded.store import Store

ORANGE = (255, 127, 14)  # matplotlib's "tab:orange", the eval dots


def decoding_loss(steps: int) -> list[tuple[float, float]]:
    """A training curve's shape: 5.5 falling towards 1.5, with a little alternating noise."""
    return [(float(s), 1.5 + 4.0 * math.exp(-s / 40) + 0.05 * (-1) ** s) for s in range(steps)]


def test_the_chart_is_a_png_of_the_asked_size_with_labelled_axes_and_legend() -> None:
    train = decoding_loss(200)
    fig = line_chart(
        [
            Series("train", train, "tab:blue", "faint"),
            Series("eval", [(50.0, 3.0), (100.0, 2.4), (150.0, 2.1)], "tab:orange", "dots"),
        ],
        title="default/demo: loss",
        x_label="step",
        y_label="cross-entropy loss",
        width=640,
        height=400,
    )
    ax = fig.axes[0]
    assert ax.get_title() == "default/demo: loss"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("step", "cross-entropy loss")
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["train", "eval"]
    assert list(ax.get_lines()[0].get_ydata()) == [y for _, y in train]

    data = png_bytes(fig)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (640, 400)
    assert 5_000 < len(data) < 500_000
    assert ORANGE in {c for _, c in image.getcolors(maxcolors=640 * 400)}


def test_points_that_are_not_finite_are_left_out_and_empty_series_leave_no_legend_entry() -> None:
    fig = line_chart(
        [
            Series("train", [(1.0, 4.0), (2.0, math.nan), (3.0, math.inf), (4.0, 2.0)]),
            Series("eval", []),
        ],
        title="t",
        x_label="step",
        y_label="loss",
    )
    ax = fig.axes[0]
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[1.0, 4.0]]
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["train"]


def test_the_report_writes_the_loss_curve_of_a_finished_run(tmp_path: Path, capsys) -> None:
    store = Store(tmp_path / "carina.db")
    row = store.create_job("default", make_job("demo"), now=1000.0)
    store.write_status(
        row.uid,
        {
            "phase": "Succeeded",
            "progress": {"step": 120, "totalSteps": 120},
            "startTime": "2026-01-01T00:00:00Z",
            "completionTime": "2026-01-01T00:02:05Z",
        },
    )
    paths = run_paths(tmp_path, "default", "demo", row.uid)
    paths.log(0).parent.mkdir(parents=True)
    lines = [
        json.dumps({"event": "step", "step": int(s), "loss": v, "tokensPerSecond": 900.0})
        for s, v in decoding_loss(120)
    ]
    lines += [json.dumps({"event": "eval", "step": s, "loss": 2.0 + 60 / s}) for s in (40, 80, 120)]
    paths.log(0).write_text("\n".join(lines) + "\n")

    assert report(tmp_path, "default", "demo") == 0

    out = capsys.readouterr().out
    assert "Succeeded in 2m05s" in out
    png = paths.root / "loss.png"
    assert f"loss curve   {png}" in out
    image = Image.open(png).convert("RGB")
    assert image.size == (800, 480)
    assert ORANGE in {c for _, c in image.getcolors(maxcolors=800 * 480)}


def test_a_run_without_steps_gets_no_loss_curve(tmp_path: Path) -> None:
    store = Store(tmp_path / "carina.db")
    row = store.create_job("default", make_job("early"), now=1000.0)
    store.write_status(row.uid, {"phase": "Failed"})
    assert report(tmp_path, "default", "early") == 1
    assert not (run_paths(tmp_path, "default", "early", row.uid).root / "loss.png").exists()


def test_curves_keep_the_last_loss_of_a_step_trained_again(tmp_path: Path) -> None:
    log = tmp_path / "worker-0.log"
    log.write_text(
        "--- carina: worker 0, restart 0\n"
        '{"event": "step", "step": 1, "loss": 4.0, "tokensPerSecond": 100}\n'
        '{"event": "step", "step": 2, "loss": 3.0, "tokensPerSecond": 100}\n'
        "Traceback: something broke\n"
        '{"event": "step", "step": 2, "loss": 2.9, "tokensPerSecond": 120}\n'
        '{"event": "eval", "step": 2, "loss": 3.1}\n'
    )
    curves = read_curves(log)
    assert curves.train == {1: 4.0, 2: 2.9}
    assert curves.eval == {2: 3.1}
    assert curves.tokens_per_second == [100.0, 100.0, 120.0]


def test_smoothing_keeps_a_constant_curve_constant() -> None:
    points = [(float(i), 2.0) for i in range(500)]
    assert smooth(points) == points
