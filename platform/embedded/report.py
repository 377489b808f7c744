"""What a finished run on the embedded platform did: a summary and a loss-curve PNG.

    python -m carina.platform.embedded.report --state-dir runs/embedded examples/pretrain-tiny.yaml

Reads the store and the run folder directly (the embedded control plane may be gone by
then); `make run` calls it after `carina run`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from carina.platform.api.manifests import ManifestError, load_jobs
from carina.platform.embedded.launcher import run_paths
from carina.platform.embedded.plot import Series, line_chart, png_bytes
from carina.platform.embedded.store import Store


@dataclass
class Curves:
    """Per-step training loss, held-out loss and throughput of one run."""

    train: dict[int, float] = field(default_factory=dict)
    eval: dict[int, float] = field(default_factory=dict)
    tokens_per_second: list[float] = field(default_factory=list)


def read_curves(log: Path) -> Curves:
    """Rank 0's JSON event lines; a step trained again after a restart keeps its last loss."""
    curves = Curves()
    if not log.exists():
        return curves
    for line in log.read_text(errors="replace").splitlines():
        line = line.removeprefix("[rank 0] ")  # a worker of several ranks tags their lines
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "step" and "loss" in event:
            curves.train[int(event["step"])] = float(event["loss"])
            if event.get("tokensPerSecond"):
                curves.tokens_per_second.append(float(event["tokensPerSecond"]))
        elif event.get("event") == "eval" and "loss" in event:
            curves.eval[int(event["step"])] = float(event["loss"])
    return curves


def smooth(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A centred moving mean over ~2% of the run (no lag, unlike an EMA, at the steep start)."""
    half = max(1, len(points) // 100)
    ys = [y for _, y in points]
    return [
        (x, statistics.fmean(ys[max(0, i - half) : i + half + 1]))
        for i, (x, _) in enumerate(points)
    ]


def _duration(status: dict[str, Any]) -> str:
    try:
        start = datetime.fromisoformat(status["startTime"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(status["completionTime"].replace("Z", "+00:00"))
    except (KeyError, AttributeError, ValueError):
        return "-"
    seconds = int((end - start).total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s"


def report(state_dir: Path, namespace: str, name: str) -> int:
    """Print the summary and write loss.png into the run folder; 0 iff the job Succeeded."""
    store = Store(state_dir / "carina.db")
    row = store.get_job(namespace, name)
    if row is None:
        print(f"no job {namespace}/{name} in {state_dir}", file=sys.stderr)
        return 2
    status = json.loads(row.status)
    paths = run_paths(state_dir, namespace, name, row.uid)
    curves = read_curves(paths.log(0))
    phase = status.get("phase", "Pending")
    progress = status.get("progress") or {}
    print(
        f"== {namespace}/{name}: {phase} in {_duration(status)}"
        f" (restarts: {status.get('restarts', 0)})"
    )
    for cond in status.get("conditions") or []:
        if cond["type"] in ("Failed", "Succeeded") and cond["status"] == "True":
            print(f"   {cond['reason']}: {cond.get('message', '')}")
    print(f"   steps        {progress.get('step', 0)}/{progress.get('totalSteps', '?')}")
    if curves.train:
        last = sorted(curves.train)[-20:]
        mean = statistics.fmean(curves.train[s] for s in last)
        first = curves.train[min(curves.train)]
        print(
            f"   train loss   {first:.3f} at step {min(curves.train)} -> {mean:.3f}"
            f" (mean of the last {len(last)} steps)"
        )
    if curves.eval:
        step = max(curves.eval)
        print(
            f"   eval loss    {curves.eval[step]:.3f} at step {step}"
            f" (best {min(curves.eval.values()):.3f})"
        )
    if curves.tokens_per_second:
        print(
            f"   tokens/s     {statistics.median(curves.tokens_per_second):,.0f}"
            " (median over the run, all workers)"
        )
    ckpt = status.get("lastCheckpoint")
    print(f"   checkpoint   {ckpt['uri'] if ckpt else '(none)'}")
    print(f"   logs         {paths.root / 'logs'}")
    if curves.train:
        raw = sorted(curves.train.items())
        chart = line_chart(
            [
                Series("train", [(float(s), v) for s, v in raw], "tab:blue", "faint"),
                Series("train (smoothed)", smooth([(float(s), v) for s, v in raw]), "tab:blue"),
                Series(
                    "eval",
                    [(float(s), v) for s, v in sorted(curves.eval.items())],
                    "tab:orange",
                    "dots",
                ),
            ],
            title=f"{namespace}/{name}: loss",
            x_label="step",
            y_label="cross-entropy loss",
        )
        target = paths.root / "loss.png"
        target.write_bytes(png_bytes(chart))
        print(f"   loss curve   {target}")
    return 0 if phase == "Succeeded" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", help="a TrainingJob manifest, or a job name")
    parser.add_argument("--state-dir", type=Path, default=Path("~/.carina"))
    parser.add_argument("--namespace", "-n", default="default")
    args = parser.parse_args(argv)
    name, namespace = args.job, args.namespace
    if Path(args.job).is_file():
        try:
            job = load_jobs(Path(args.job))[0]
        except ManifestError as exc:
            print(exc, file=sys.stderr)
            return 2
        name, namespace = job.metadata.name, job.metadata.namespace or namespace
    return report(args.state_dir.expanduser().resolve(), namespace, name)


if __name__ == "__main__":
    sys.exit(main())
