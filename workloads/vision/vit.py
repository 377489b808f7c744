"""A data-efficient image transformer (DeiT): a ViT with a class token and a distillation token.

Touvron et al., "Training data-efficient image transformers & distillation through attention"
(ICML 2021), the student of DeiT-LT. The image is cut into P x P patches, each projected to
d_model; a learned class token and (optionally) a distillation token are prepended; pre-norm
transformer blocks mix them; the class token's output goes to the classification head and the
distillation token's to the distillation head. At test time the two heads' logits are averaged
(`DeiT.predict`). Without a distillation token it is a plain ViT and the class head alone
predicts.

Shapes: B batch, C channels, H = W = image_size, N = (H / P)^2 patches, T = N + tokens,
D = d_model, h heads, hd = D / h.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carina.workloads.config import VisionArchitecture


class PatchEmbed(nn.Module):
    """Non-overlapping P x P patches, each projected to D (a strided convolution)."""

    def __init__(self, arch: VisionArchitecture) -> None:
        super().__init__()
        p = arch.patch_size
        self.proj = nn.Conv2d(arch.in_channels, arch.d_model, kernel_size=p, stride=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    def __init__(self, arch: VisionArchitecture) -> None:
        super().__init__()
        self.n_heads = arch.n_heads
        self.qkv = nn.Linear(arch.d_model, 3 * arch.d_model)
        self.proj = nn.Linear(arch.d_model, arch.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads)  # (B, T, 3, h, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, h, T, hd)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, hd), every token sees all
        return self.proj(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, arch: VisionArchitecture) -> None:
        super().__init__()
        hidden = arch.mlp_ratio * arch.d_model
        self.ln1 = nn.LayerNorm(arch.d_model)
        self.attn = Attention(arch)
        self.ln2 = nn.LayerNorm(arch.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(arch.d_model, hidden), nn.GELU(), nn.Linear(hidden, arch.d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))  # (B, T, D)
        return x + self.mlp(self.ln2(x))  # (B, T, D)


class DeiT(nn.Module):
    """The student: `forward` gives (class-head logits, distillation-head logits or None)."""

    def __init__(self, arch: VisionArchitecture) -> None:
        super().__init__()
        self.arch = arch
        d = arch.d_model
        self.tokens = 2 if arch.dist_token else 1
        self.patch_embed = PatchEmbed(arch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if arch.dist_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, arch.n_patches + self.tokens, d))
        self.blocks = nn.ModuleList(Block(arch) for _ in range(arch.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, arch.num_classes)
        self.head_dist = nn.Linear(d, arch.num_classes) if arch.dist_token else None
        self._init_weights()

    def _init_weights(self) -> None:
        # DeiT's initialization: truncated normal (std 0.02) for tokens, positions and linears.
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        B = x.shape[0]
        patches = self.patch_embed(x)  # (B, N, D)
        tokens = [self.cls_token.expand(B, -1, -1)]  # (B, 1, D)
        if self.dist_token is not None:
            tokens.append(self.dist_token.expand(B, -1, -1))
        h = torch.cat([*tokens, patches], dim=1) + self.pos_embed  # (B, T, D)
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        logits = self.head(h[:, 0])  # (B, classes): the class token's view
        if self.head_dist is None:
            return logits, None
        return logits, self.head_dist(h[:, 1])  # (B, classes): the distillation token's

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each head's logits and their average, the prediction at test time (B, classes)."""
        cls, dist = self(x)
        if dist is None:
            return {"cls": cls, "avg": cls}
        return {"cls": cls, "dist": dist, "avg": average_heads(cls, dist)}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def average_heads(cls: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """DeiT's test-time prediction: the mean of the two heads' logits."""
    return (cls + dist) / 2
