"""Views of a batch: weak (random shifts) and strong (random resized crops, then mixup or cutmix).

The teacher trains on weak views. DeiT-LT's student trains on strong ones, and the teacher
labels those same strong views for the distillation token: images unlike any it was trained
on (out of distribution), on which its argmax often names a tail class, which is what lifts
the student's tail (DeiT-LT §4.1). Everything runs on the batch's device; randomness comes
from the generator passed in (`step_generator`), so a resumed run draws the same views.

Shapes: B batch, C channels, H = W pixels, K classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from carina.workloads.config import VisionAugmentSpec


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The CPU generator of one rank's views at one step (the same after a resume)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 4099 + rank)


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _draw_seed(g: torch.Generator) -> int:
    return int(torch.randint(2**31 - 1, (1,), generator=g).item())


def _warp(images: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample `images` (B, C, H, W) through per-image affine maps theta (B, 2, 3); zeros outside."""
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def weak_view(images: torch.Tensor, shift: int, g: torch.Generator) -> torch.Tensor:
    """Each image moved by a whole number of pixels in [-shift, shift] on each axis (B, C, H, W)."""
    if shift == 0:
        return images
    B, _, H, W = images.shape
    d = torch.randint(-shift, shift + 1, (B, 2), generator=g).float()  # (B, 2) pixels
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 2 * d[:, 0] / W  # grid units: the image spans [-1, 1]
    theta[:, 1, 2] = 2 * d[:, 1] / H
    return _warp(images, theta, "nearest")


def random_resized_crop(images: torch.Tensor, min_scale: float, g: torch.Generator) -> torch.Tensor:
    """A crop of area share U(min_scale, 1) and aspect ratio in [3/4, 4/3], resized back."""
    B = images.shape[0]
    area = _uniform(g, B, min_scale, 1.0)
    aspect = torch.exp(_uniform(g, B, math.log(3 / 4), math.log(4 / 3)))
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width, share of the image's
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * _uniform(g, B, -1.0, 1.0)  # the crop's centre stays inside the image
    cy = (1 - h) * _uniform(g, B, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return _warp(images, theta, "bilinear")


@dataclass(frozen=True)
class Mixed:
    """A mixed batch: image i is lam·x_i + (1 - lam)·x_perm[i] (mixup) or x_i with a box of
    x_perm[i] pasted in (cutmix, lam the area left of x_i); targets mix the same way."""

    images: torch.Tensor  # (B, C, H, W)
    perm: torch.Tensor  # (B,) partner of each image
    lam: float  # weight of each image's own label

    def targets(self, labels: torch.Tensor, classes: int) -> torch.Tensor:
        """Soft targets (B, K): lam·onehot(y) + (1 - lam)·onehot(y[perm])."""
        one_hot = F.one_hot(labels, classes).float()
        return self.lam * one_hot + (1 - self.lam) * one_hot[self.perm.to(labels.device)]


def mix(images: torch.Tensor, mixup_alpha: float, cutmix_alpha: float, g: torch.Generator) -> Mixed:
    """Mixup (lam ~ Beta(a, a)) or cutmix, half the batches each when both are on (as DeiT)."""
    B, _, H, W = images.shape
    perm = torch.randperm(B, generator=g)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(1, generator=g).item() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    if alpha <= 0:
        return Mixed(images, perm, 1.0)
    # torch's Beta takes no generator: numpy's, seeded from the step's.
    lam = float(np.random.default_rng(_draw_seed(g)).beta(alpha, alpha))
    other = images[perm.to(images.device)]
    if not use_cutmix:
        return Mixed(lam * images + (1 - lam) * other, perm, lam)
    cut_h, cut_w = round(H * math.sqrt(1 - lam)), round(W * math.sqrt(1 - lam))
    cy = int(torch.randint(H, (1,), generator=g).item())
    cx = int(torch.randint(W, (1,), generator=g).item())
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, H)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, W)
    out = images.clone()
    out[:, :, y0:y1, x0:x1] = other[:, :, y0:y1, x0:x1]
    return Mixed(out, perm, 1 - (y1 - y0) * (x1 - x0) / (H * W))  # lam of the box cut


def strong_view(images: torch.Tensor, spec: VisionAugmentSpec, g: torch.Generator) -> Mixed:
    """DeiT's strong augmentation: a random resized crop of each image, then mixup or cutmix."""
    cropped = random_resized_crop(images, spec.crop_scale, g) if spec.crop_scale < 1 else images
    return mix(cropped, spec.mixup_alpha, spec.cutmix_alpha, g)
