"""The evaluation report: accuracy overall and on head, medium and tail classes, per head.

Written as JSON (`report.json`, for machines) and Markdown (`report.md`, for people) at the
root of the checkpoint URI, next to the checkpoints. Accuracy is on the balanced held-out set;
head, medium and tail are thirds of the classes by training count (`longtail.class_groups`:
classes sorted by count, the one at rank r of C in group ⌊3r / C⌋).

report.json: {"recipe": {...switches...}, "classNames", "trainCounts", "testPerClass",
"groups": {"head", "medium", "tail": [classes]}, "groupRule", "student": {"cls", "dist", "avg":
{"overall", "head", "medium", "tail", "perClass"}}, "teacher": {same keys} or null}. "dist"
is absent for a plain ViT, whose "avg" is its class head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from carina.workloads.vision.longtail import GROUPS

GROUP_RULE = "classes sorted by training count, largest first; rank r of C is in group ⌊3r/C⌋"
HEADS = ("cls", "dist", "avg")


@torch.no_grad()
def predict_all(
    forward: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    images: torch.Tensor,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """Each head's predicted class for every image (N,), in batches of `batch_size`."""
    out: dict[str, list[torch.Tensor]] = {}
    for first in range(0, images.shape[0], batch_size):
        for head, logits in forward(images[first : first + batch_size]).items():
            out.setdefault(head, []).append(logits.argmax(dim=-1).cpu())
    return {head: torch.cat(preds) for head, preds in out.items()}


def accuracies(
    predicted: torch.Tensor, labels: torch.Tensor, groups: dict[str, list[int]], classes: int
) -> dict[str, Any]:
    """Overall, per-group and per-class accuracy (per-class means, so a group of classes
    counts each class once whatever its number of test images)."""
    correct = (predicted == labels).float()
    per_class = []
    for c in range(classes):
        mask = labels == c
        per_class.append(float(correct[mask].mean()) if mask.any() else float("nan"))

    def mean(cs: list[int]) -> float:
        vals = [per_class[c] for c in cs if per_class[c] == per_class[c]]  # NaN: no images
        return sum(vals) / len(vals) if vals else float("nan")

    result: dict[str, Any] = {"overall": float(correct.mean())}
    result.update({g: mean(groups[g]) for g in GROUPS})
    result["perClass"] = per_class
    return result


def build_report(
    student: dict[str, torch.Tensor],
    teacher: torch.Tensor | None,
    labels: torch.Tensor,
    counts: list[int],
    groups: dict[str, list[int]],
    class_names: tuple[str, ...],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The report of predictions `student` (per head) and `teacher` on the held-out `labels`."""
    classes = len(class_names)
    return {
        **meta,
        "classNames": list(class_names),
        "trainCounts": counts,
        "testPerClass": int((labels == 0).sum()),
        "groups": groups,
        "groupRule": GROUP_RULE,
        "student": {
            head: accuracies(student[head], labels, groups, classes)
            for head in HEADS
            if head in student
        },
        "teacher": None if teacher is None else accuracies(teacher, labels, groups, classes),
    }


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown page: one table row per model head."""
    groups = report["groups"]
    lines = [
        "# DeiT-LT evaluation",
        "",
        f"Balanced held-out set: {report['testPerClass']} images per class. Training images "
        f"per class: {', '.join(str(n) for n in report['trainCounts'])}.",
        "",
        f"Head classes {groups['head']}, medium {groups['medium']}, tail {groups['tail']} "
        f"({report['groupRule']}).",
        "",
        "| model | output | overall % | head % | medium % | tail % |",
        "|---|---|---|---|---|---|",
    ]
    rows = [("student", h, acc) for h, acc in report["student"].items()]
    if report.get("teacher"):
        rows.append(("teacher", "-", report["teacher"]))
    for model, head, acc in rows:
        lines.append(
            f"| {model} | {head} | {_pct(acc['overall'])} | {_pct(acc['head'])} | "
            f"{_pct(acc['medium'])} | {_pct(acc['tail'])} |"
        )
    if report.get("recipe"):
        switches = ", ".join(f"{k}: {v}" for k, v in report["recipe"].items())
        lines += ["", f"Recipe: {switches}."]
    return "\n".join(lines) + "\n"
