"""The long-tailed profile, the seeded split into training and held-out images, and the
head / medium / tail classes. Pure functions of labels and counts.

Exponential profile (Cui et al., "Class-Balanced Loss Based on Effective Number of Samples",
CVPR 2019; the CIFAR-LT construction DeiT-LT uses): class c of C keeps

    n_c = round(n_max * ratio^(-c / (C - 1)))

training images, so n_0 = n_max (the head) and n_{C-1} = n_max / ratio (the tail).

Head, medium and tail are thirds of the classes by training count: classes sorted by count,
largest first (ties by class index), the one at rank r (0-based) of C falls in group
floor(3r / C): 10 classes split 4 / 3 / 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

GROUPS = ("head", "medium", "tail")


def longtail_counts(max_per_class: int, ratio: float, classes: int) -> list[int]:
    """Training images per class, n_c = round(n_max · ratio^(-c/(C-1))), at least 1."""
    if classes == 1:
        return [max_per_class]
    return [max(1, round(max_per_class * ratio ** (-c / (classes - 1)))) for c in range(classes)]


@dataclass(frozen=True)
class Split:
    """Indices into the full image set: the long-tailed training set and the held-out one."""

    train: list[int]
    test: list[int]
    counts: list[int]  # training images per class


class NotEnoughImages(ValueError):
    """A class has fewer images than its held-out and training shares need."""


def split_indices(
    labels: Sequence[int], classes: int, test_per_class: int, counts: Sequence[int], seed: int
) -> Split:
    """Per class, a seeded shuffle: the first `test_per_class` are held out (a balanced test
    set), the next `counts[c]` are class c's training images; the rest go unused."""
    by_class: list[list[int]] = [[] for _ in range(classes)]
    for i, y in enumerate(labels):
        by_class[int(y)].append(i)
    train: list[int] = []
    test: list[int] = []
    for c, members in enumerate(by_class):
        need = test_per_class + counts[c]
        if len(members) < need:
            raise NotEnoughImages(
                f"class {c} has {len(members)} images; {test_per_class} held out and "
                f"{counts[c]} for training need {need}"
            )
        g = torch.Generator().manual_seed(seed * 1_000_003 + c)
        order = [members[j] for j in torch.randperm(len(members), generator=g).tolist()]
        test += order[:test_per_class]
        train += order[test_per_class:need]
    return Split(sorted(train), sorted(test), list(counts))


def class_groups(counts: Sequence[int]) -> dict[str, list[int]]:
    """{"head", "medium", "tail"}: the classes of each third by training count."""
    ranked = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    groups: dict[str, list[int]] = {g: [] for g in GROUPS}
    for rank, c in enumerate(ranked):
        groups[GROUPS[3 * rank // len(counts)]].append(c)
    return {g: sorted(cs) for g, cs in groups.items()}
