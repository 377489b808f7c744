"""µP coordinate check (Yang et al. 2021): activation updates keep their scale as width grows."""

from __future__ import annotations

import pytest
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


def tiny_logits(**mup: float) -> torch.Tensor:
    torch.manual_seed(0)
    model = Transformer(ModelSpec(preset="tiny", n_layers=2, max_seq_len=32, **mup).resolve())
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = model(x)
    return logits


def test_default_mup_multipliers_reproduce_the_fixed_constants_outputs() -> None:
    # Logits of this model when m_emb = 12, m_res = 0.22 and σ = 0.1 were constants in the code.
    logits = tiny_logits()
    assert logits[0, -1, :6].tolist() == pytest.approx(
        [
            5.622687816619873,
            1.2470042705535889,
            1.0496646165847778,
            4.340874195098877,
            -0.8897210359573364,
            1.0317729711532593,
        ],
        rel=1e-6,
    )
    assert float(logits.double().abs().sum()) == pytest.approx(21135.422299051163, rel=1e-6)
    explicit = tiny_logits(mup_emb_mult=12.0, mup_res_mult=0.22, mup_init_std=0.1)
    assert torch.equal(logits, explicit)


@pytest.mark.parametrize(
    "setting", [{"mup_emb_mult": 10.0}, {"mup_res_mult": 0.26}, {"mup_init_std": 0.02}]
)
def test_each_mup_multiplier_is_a_setting_that_changes_the_forward_pass(
    setting: dict[str, float],
) -> None:
    assert not torch.allclose(tiny_logits(**setting), tiny_logits(), atol=1e-4)


def test_the_residual_multiplier_scales_each_branch_before_the_residual_add() -> None:
    # With the attention and MLP outputs captured, block 0's output is x + m_res·a + m_res·m.
    torch.manual_seed(0)
    model = Transformer(ModelSpec(preset="tiny", n_layers=1, mup_res_mult=0.5).resolve())
    block = model.blocks[0]
    seen: dict[str, torch.Tensor] = {}
    block.attn.register_forward_hook(lambda m, i, o: seen.__setitem__("a", o[0]))
    block.mlp.register_forward_hook(lambda m, i, o: seen.__setitem__("m", o[0]))
    block.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o[0]))
    block.register_forward_pre_hook(lambda m, i: seen.__setitem__("x", i[0]))
    with torch.no_grad():
        model(torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(1)))
    expected = seen["x"] + 0.5 * seen["a"] + 0.5 * seen["m"]
    assert torch.allclose(seen["out"], expected, atol=1e-6)
