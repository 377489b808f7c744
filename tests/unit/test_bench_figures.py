"""Benchmark figures (bench/figures.py and the scripts' --figures), on small synthetic curves."""

from __future__ import annotations

import argparse
import importlib
import math
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[2] / "bench"
# matplotlib's default cycle: C0, C1, C2
CYCLE = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/ on sys.path, as when a script runs; returns bench/figures.py."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("figures")


def loss_curve(steps: int, floor: float) -> list[tuple[int, float]]:
    return [(s, floor + 3.0 * math.exp(-s / 60) + 0.1 * (-1) ** s) for s in range(1, steps + 1)]


def colours(path: Path) -> set[tuple[int, int, int]]:
    image = Image.open(path).convert("RGB")
    return {c for _, c in image.getcolors(maxcolors=image.width * image.height)}


def test_long_curves_are_drawn_raw_and_smoothed_short_ones_as_they_are(bench) -> None:
    series = bench.curve_series({"qat": loss_curve(300, 2.0), "eval": [(100, 3.0), (200, 2.5)]})
    assert [(s.label, s.style) for s in series] == [
        ("qat (per step)", "faint"),
        ("qat (moving mean)", "line"),
        ("eval", "markers"),
    ]
    raw, smoothed = series[0].points, series[1].points
    assert len(smoothed) == len(raw) == 300
    # The moving mean takes most of the alternating noise out of neighbouring steps.
    assert abs(smoothed[150][1] - smoothed[151][1]) < abs(raw[150][1] - raw[151][1]) / 4
    assert series[0].color == series[1].color != series[2].color


def test_save_curves_writes_a_png_with_one_colour_per_curve(bench, tmp_path) -> None:
    path = bench.save_curves(
        tmp_path / "figures" / "demo.png",
        {"a": loss_curve(80, 1.0), "b": loss_curve(80, 1.5), "c": loss_curve(80, 2.0)},
        title="demo",
        x_label="step",
        y_label="loss",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(path).size == (800, 480)
    assert set(CYCLE) <= colours(path)


@pytest.mark.usefixtures("bench")
def test_w4a4_draws_its_three_training_curves(tmp_path) -> None:
    w4a4 = importlib.import_module("w4a4")
    curves = {run: loss_curve(120, 2.0 + 0.2 * i) for i, run in enumerate(w4a4.RUNS)}
    args = argparse.Namespace(figures=tmp_path, finetune_steps=120, bits=4, seed=7)
    path = w4a4.draw_curves(curves, args)
    assert path == tmp_path / "w4a4-training-loss.png"
    assert set(CYCLE) <= colours(path)


@pytest.mark.usefixtures("bench")
def test_techniques_draws_the_ds_moe_tradeoff(tmp_path) -> None:
    techniques = importlib.import_module("techniques")
    tradeoff = {
        "dense": [(100.0, 2.0)],
        "threshold": [(40.0, 2.6), (55.0, 2.2), (70.0, 2.05), (100.0, 2.0)],
        "top-k": [(30.0, 3.1), (45.0, 2.4), (70.0, 2.1)],
    }
    path = techniques.draw_tradeoff(tradeoff, tmp_path)
    assert path == tmp_path / "ds-moe-sparsity.png"
    assert set(CYCLE) <= colours(path)
