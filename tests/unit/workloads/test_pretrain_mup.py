"""µP coordinate check (Yang et al. 2021): activation updates keep their scale as width grows."""

from __future__ import annotations

import torch

from carina.workloads.config import ModelSpec
from carina.workloads.models.transformer import Transformer, param_groups

torch.set_num_threads(1)
WIDTHS = (64, 128, 256)


def activation_change(width: int, mup: bool, lr: float = 1e-2, steps: int = 4) -> float:
    """Mean |Δ| of the last block's attention and MLP outputs after a few Adam steps."""
    torch.manual_seed(0)
    arch = ModelSpec(
        d_model=width,
        n_layers=2,
        n_heads=width // 16,
        n_kv_heads=width // 16,
        mup=mup,
        mup_base_width=64,
        max_seq_len=32,
    ).resolve()
    model = Transformer(arch)
    opt = torch.optim.AdamW(param_groups(model, 0.0), lr=lr)
    for group in opt.param_groups:
        group["lr"] = lr * group["lr_scale"]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 256, (8, 32), generator=g), torch.randint(0, 256, (8, 32), generator=g)
    outputs: dict[str, torch.Tensor] = {}
    block = model.blocks[-1]
    block.attn.register_forward_hook(lambda m, i, o: outputs.__setitem__("attn", o[0].detach()))
    block.mlp.register_forward_hook(lambda m, i, o: outputs.__setitem__("mlp", o[0].detach()))
    with torch.no_grad():
        model(x)
    before = dict(outputs)
    for _ in range(steps):
        _, loss = model(x, y)
        assert loss is not None
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        model(x)
    return float(sum((outputs[k] - before[k]).abs().mean() for k in outputs) / len(outputs))


def spread(values: list[float]) -> float:
    return max(values) / min(values)


def test_mup_activation_updates_stay_the_same_scale_across_widths() -> None:
    mup = [activation_change(w, mup=True) for w in WIDTHS]
    standard = [activation_change(w, mup=False) for w in WIDTHS]
    # µP: within a factor 1.5 over a 4x width range; the standard parametrization at the same
    # learning rate blows up with width (it is the control that shows the check can fail).
    assert spread(mup) < 1.5, mup
    assert standard[-1] / standard[0] > 10, standard
