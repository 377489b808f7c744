"""DeiT-LT's pieces, each on its own: DRW weights, the losses, the views, SAM, the report."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from carina.workloads.config import VisionAugmentSpec
from carina.workloads.vision.augment import mix, step_generator, strong_view, weak_view
from carina.workloads.vision.losses import (
    drw_on,
    drw_weights,
    hard_distillation,
    soft_cross_entropy,
    student_loss,
)
from carina.workloads.vision.report import accuracies, build_report, render_markdown
from carina.workloads.vision.sam import sam_step

torch.set_num_threads(1)
COUNTS = [100, 60, 36, 22, 13, 8, 5, 3, 2, 1]


# ---------------------------------------------------------------- DRW


def test_drw_weights_follow_the_inverse_effective_number_and_sum_to_the_classes() -> None:
    beta = 0.9999
    w = drw_weights(COUNTS, beta)
    assert float(w.sum()) == pytest.approx(10.0)
    assert w.tolist() == sorted(w.tolist())  # the rarer the class, the heavier
    effective = [(1 - beta**n) / (1 - beta) for n in COUNTS]
    for c in range(10):
        assert float(w[c] / w[0]) == pytest.approx(effective[0] / effective[c], rel=1e-5)
    # β = 0: every class has effective number 1, so equal weights
    assert drw_weights(COUNTS, 0.0).tolist() == pytest.approx([1.0] * 10)


def test_drw_switches_on_late_in_training() -> None:
    assert [drw_on(e, 20, 0.75) for e in (0, 14, 15, 19)] == [False, False, True, True]
    assert drw_on(0, 20, 0.0)
    assert not drw_on(19, 20, 1.0)


# ---------------------------------------------------------------- losses


def test_without_a_distillation_head_the_loss_is_cross_entropy_alone() -> None:
    logits = torch.randn(6, 10)
    labels = torch.randint(0, 10, (6,))
    targets = F.one_hot(labels, 10).float()
    loss = student_loss(logits, None, targets, torch.randn(6, 10), None)
    torch.testing.assert_close(loss.total, F.cross_entropy(logits, labels))
    assert loss.distill is None
    no_teacher = student_loss(logits, torch.randn(6, 10), targets, None, None)
    torch.testing.assert_close(no_teacher.total, F.cross_entropy(logits, labels))


def test_with_distillation_the_loss_is_half_ground_truth_half_teacher_argmax() -> None:
    cls, dist, teacher = torch.randn(6, 10), torch.randn(6, 10), torch.randn(6, 10)
    labels = torch.randint(0, 10, (6,))
    loss = student_loss(cls, dist, F.one_hot(labels, 10).float(), teacher, None)
    kd = F.cross_entropy(dist, teacher.argmax(-1))  # hard: the teacher's argmax, not its soft
    torch.testing.assert_close(loss.total, 0.5 * F.cross_entropy(cls, labels) + 0.5 * kd)
    assert loss.distill is not None
    torch.testing.assert_close(loss.distill, kd)


def test_drw_weighs_the_distillation_loss_by_the_teachers_label_class() -> None:
    dist = torch.zeros(2, 10)
    teacher = torch.zeros(2, 10)
    teacher[0, 0] = teacher[1, 9] = 5.0  # the teacher says head (0), then tail (9)
    dist[1, 3] = 4.0  # the student misses the tail image more
    w = drw_weights(COUNTS, 0.9999)
    plain = hard_distillation(dist, teacher, None)
    weighted = hard_distillation(dist, teacher, w)
    per_image = F.cross_entropy(dist, teacher.argmax(-1), reduction="none")
    expected = (w[0] * per_image[0] + w[9] * per_image[1]) / (w[0] + w[9])
    torch.testing.assert_close(weighted, expected)
    assert float(weighted) > float(plain)  # the tail image counts for more


def test_soft_cross_entropy_of_a_one_hot_target_is_cross_entropy() -> None:
    logits = torch.randn(4, 5)
    labels = torch.tensor([0, 3, 4, 1])
    torch.testing.assert_close(
        soft_cross_entropy(logits, F.one_hot(labels, 5).float()), F.cross_entropy(logits, labels)
    )


# ---------------------------------------------------------------- views


def test_weak_views_shift_whole_pixels_and_keep_the_ink() -> None:
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3:5, 3:5] = 1.0
    view = weak_view(image.repeat(16, 1, 1, 1), 1, step_generator(0, 0, 0))
    assert torch.equal(view.sum(dim=(1, 2, 3)), torch.full((16,), 4.0))  # only moved
    assert len({tuple(v.flatten().tolist()) for v in view}) > 1
    assert torch.equal(weak_view(image, 0, step_generator(0, 0, 0)), image)


def test_strong_views_are_reproducible_per_step_and_mix_their_targets() -> None:
    images = torch.rand(8, 1, 8, 8)
    labels = torch.arange(8)
    spec = VisionAugmentSpec()
    a = strong_view(images, spec, step_generator(1, 0, 5))
    b = strong_view(images, spec, step_generator(1, 0, 5))
    assert torch.equal(a.images, b.images)  # a resumed step draws the same view
    assert not torch.equal(a.images, strong_view(images, spec, step_generator(1, 0, 6)).images)
    targets = a.targets(labels, 8)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(8))
    assert 0.0 <= a.lam <= 1.0
    own = torch.where(a.perm == labels, 1.0, a.lam)  # an image paired with itself keeps it all
    torch.testing.assert_close(targets[torch.arange(8), labels], own)


def test_mixup_blends_images_and_cutmix_pastes_a_box() -> None:
    images = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
    mixed = mix(images, mixup_alpha=0.8, cutmix_alpha=0.0, g=step_generator(0, 0, 1))
    partner = images[mixed.perm]
    torch.testing.assert_close(mixed.images, mixed.lam * images + (1 - mixed.lam) * partner)
    cut = mix(images, mixup_alpha=0.0, cutmix_alpha=1.0, g=step_generator(0, 0, 1))
    pasted = (cut.images != images).float().mean(dim=(1, 2, 3))  # share taken from the partner
    moved = cut.perm != torch.arange(2)
    if moved.any():
        assert float(pasted[moved][0]) == pytest.approx(1 - cut.lam)
    off = mix(images, 0.0, 0.0, step_generator(0, 0, 1))
    assert off.lam == 1.0
    assert torch.equal(off.images, images)


# ---------------------------------------------------------------- SAM


def test_sam_steps_with_the_gradient_at_the_worst_nearby_point() -> None:
    w0 = torch.tensor([1.0, -2.0, 0.5])
    w = nn.Parameter(w0.clone())
    model = nn.Module()
    model.w = w
    opt = torch.optim.SGD([w], lr=0.1)
    rho = 0.05

    def loss_fn() -> torch.Tensor:
        return (w**4).sum() / 4  # ∇ = w³

    sam_step(model, opt, loss_fn, rho)
    g = w0**3
    eps = rho * g / g.norm()
    torch.testing.assert_close(w.detach(), w0 - 0.1 * (w0 + eps) ** 3)  # not w0 - 0.1·w0³


def test_sam_updates_batch_norm_statistics_once_per_step() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 3)
    reference = nn.BatchNorm1d(4)
    with torch.no_grad():
        reference(model[0](x))  # one update of the statistics with the starting weights
    sam_step(model, opt, lambda: model(x).pow(2).mean(), rho=0.05)
    torch.testing.assert_close(model[1].running_mean, reference.running_mean)
    torch.testing.assert_close(model[1].running_var, reference.running_var)
    assert model[1].momentum == 0.1  # restored


# ---------------------------------------------------------------- report


def test_report_gives_overall_and_group_accuracy_for_every_head() -> None:
    labels = torch.arange(10).repeat_interleave(2)  # 2 test images per class
    perfect = labels.clone()
    head_only = torch.where(labels < 4, labels, torch.zeros_like(labels))
    groups = {"head": [0, 1, 2, 3], "medium": [4, 5, 6], "tail": [7, 8, 9]}
    acc = accuracies(head_only, labels, groups, 10)
    assert acc["overall"] == pytest.approx(0.4)
    assert (acc["head"], acc["medium"], acc["tail"]) == (1.0, 0.0, 0.0)
    report = build_report(
        {"cls": head_only, "dist": perfect, "avg": perfect},
        head_only,
        labels,
        COUNTS,
        groups,
        tuple("0123456789"),
        {"recipe": {"drw": True}},
    )
    assert set(report["student"]) == {"cls", "dist", "avg"}
    assert report["student"]["dist"]["tail"] == 1.0
    assert report["testPerClass"] == 2
    md = render_markdown(report)
    assert "| student | dist | 100.0 | 100.0 | 100.0 | 100.0 |" in md
    assert "| teacher | - | 40.0 | 100.0 | 0.0 | 0.0 |" in md
    assert "tail [7, 8, 9]" in md
