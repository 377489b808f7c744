"""The run report's loss curve: a real PNG, and curves read from rank 0's JSON log lines."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from carina.platform.embedded.plot import Series, line_chart, png_bytes
from carina.platform.embedded.report import read_curves, smooth


def test_the_chart_is_a_valid_png_of_the_asked_size() -> None:
    chart = line_chart(
        [Series("train", [(1.0, 5.0), (2.0, 3.0), (3.0, 2.5)], (0, 0, 255))],
        title="demo: loss",
        x_label="step",
        y_label="loss",
        width=320,
        height=200,
    )
    data = png_bytes(chart)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (320, 200)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_len])
    assert len(raw) == height * (1 + 3 * width)


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
