"""The CNN teacher: a CIFAR-style ResNet (He et al., "Deep Residual Learning", 2016, §4.2).

A 3x3 stem, then one stage per width in `teacher_widths`, each of `teacher_blocks` basic
blocks (two 3x3 convolutions and a shortcut); every stage after the first halves the
resolution. Global average pooling and a linear classifier. Width (16, 32, 64) with 5 blocks
per stage is ResNet-32, the teacher DeiT-LT distils from on CIFAR-LT.

Shapes: B batch, C channels, H = W = image_size, Ck the k-th stage's width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carina.workloads.config import VisionArchitecture


class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); the shortcut projects on a change."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    """The teacher: `forward` gives class logits (B, classes)."""

    def __init__(self, arch: VisionArchitecture) -> None:
        super().__init__()
        self.arch = arch
        widths = arch.teacher_widths
        self.stem = nn.Sequential(
            nn.Conv2d(arch.in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for stage, width in enumerate(widths):
            for i in range(arch.teacher_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, width, stride))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, arch.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the classifier reads (B, C_last)."""
        h = self.stem(x)  # (B, C1, H, W)
        h = self.blocks(h)  # (B, C_last, H / 2^(stages-1), W / 2^(stages-1))
        return h.mean(dim=(2, 3))  # (B, C_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))  # (B, classes)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
